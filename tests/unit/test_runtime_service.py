"""The client service and the node's propose path without sockets: one pending record per request, settled by the
committed term."""
from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple, Optional

from raftlog.errors import NotLeader, ProposalDropped
from raftlog.hot import (
    ERR_BAD_REQUEST,
    ERR_NOT_LEADER,
    ERR_SHUTTING_DOWN,
    ERR_TIMEOUT,
    FRAME_APPENDED,
    FRAME_ERROR,
    KIND_CONF,
    KIND_DATA,
    KIND_SESSION,
    FrameDecoder,
    RecordBatch,
    encode_error,
)
from raftlog.runtime.append_groups import GROUP_ENTRIES, AppendGroup
from raftlog.runtime.membership import Membership
from raftlog.runtime.proposals import Proposals
from raftlog.runtime.reads import Reads
from raftlog.runtime.replies import send_reply
from raftlog.runtime.server import ClientService
from raftlog.runtime.sessions import SessionService


class FakeConn:
    def __init__(self, frames: Optional[list] = None) -> None:
        """`frames`: the list the decoded replies go to (shared by several connections to keep their order)."""
        self.closed = False
        self.write_paused = False
        self.backlog_bytes = 0      # Connection's queued reply bytes (the service pauses a client over a bound)
        self.decoder = FrameDecoder()
        self.frames: list = frames if frames is not None else []
        self.on_writable = None

    def send(self, frame: bytes, droppable: bool = False) -> bool:
        self.frames.extend(self.decoder.feed(frame))
        return True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakeLog:
    def __init__(self) -> None:
        self.first_index = 1
        self.terms: dict[int, int] = {}

    def term_at(self, index: int) -> int:
        return self.terms[index]


class FakeRaw:
    def __init__(self) -> None:
        self.next = []          # (first_index, term) to hand out, or an exception
        self.proposed = []      # the size of every proposal, refused ones included
        self.commit_index = 0
        self.raft = SimpleNamespace(log=FakeLog())

    def commit(self, first: int, batch: RecordBatch) -> None:
        """The engine's log and commit index once `batch` at `first` is committed."""
        for k in range(len(batch)):
            self.raft.log.terms[first + k] = batch.term(k)
        self.commit_index = max(self.commit_index, first + len(batch) - 1)

    def propose(self, records):
        self.proposed.append(len(records))
        item = self.next.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


class FakeNode:
    """NodePort (runtime/port.py) over a scripted engine."""

    def __init__(self) -> None:
        self.raw = FakeRaw()
        self.node_id = 1
        self.leader_id = 2
        self.storage = None
        self.applied_index = 0
        self.corrupt_index = None
        self.stopping = False
        self.kicks = 0
        self.budget = 1 << 30          # entries the next transaction may still take
        self.unwritten = 0             # entries counted against it (Node.note_unwritten)

    def write_budget_left(self) -> bool:
        return self.unwritten < self.budget

    def note_unwritten(self, count: int, nbytes: int) -> None:
        self.unwritten += count

    def kick(self) -> None:
        self.kicks += 1

    def address_of(self, node_id: int) -> str:
        return f"127.0.0.1:{7000 + node_id}"

    def add_peer(self, node_id: int, address: str) -> None:
        pass

    def status(self) -> dict:
        return {"id": self.node_id}

    def reply(self, conn, frame: bytes) -> None:
        send_reply(conn, frame)

    def error(self, conn, request_id: int, code: int, message: str) -> None:
        leader = self.leader_id if code == ERR_NOT_LEADER else 0
        send_reply(conn, encode_error(request_id, code, leader, self.address_of(leader) if leader else "", message))


class Request(NamedTuple):
    first: int
    count: int
    request_id: int
    deadline: float


class Service:
    """The client service with the node's propose path, wired as Node wires them; the node's calls by name."""

    def __init__(self, node: FakeNode, request_timeout: float) -> None:
        self.node = node
        self.proposals = Proposals(node, on_backlog=lambda waiting: self.client.on_backlog(waiting))
        self.client = ClientService(node, self.proposals, SessionService(node, self.proposals), Membership(node),
                                    Reads(node, request_timeout), request_timeout=request_timeout)

    def handler_for(self, conn) -> ClientService:
        return self.client.handler_for(conn)

    def append(self, conn, request_id: int, records: RecordBatch) -> None:
        self.client.append(conn, request_id, records)

    def flush_staged(self) -> None:
        self.proposals.flush()

    def on_committed(self, first: int, batch: RecordBatch) -> None:
        self.node.raw.commit(first, batch)
        self.proposals.on_committed(first, batch)

    def after_apply(self) -> None:
        self.proposals.retry()

    def expire(self, now: float) -> None:
        self.proposals.expire(now)

    def shutdown(self) -> None:
        self.proposals.shutdown()
        self.client.shutdown()

    @staticmethod
    def _view(reqs) -> list[Request]:
        """One Request per client request (the members of a connection's AppendGroup, each at its offset)."""
        out = []
        for p in reqs:
            if isinstance(p.waiter, AppendGroup):
                first = p.first
                for rid, n in zip(p.waiter.request_ids, p.waiter.counts):
                    out.append(Request(first, n, rid, p.deadline))
                    first += n
            else:
                out.append(Request(p.first, p.count, p.waiter.request_id, p.deadline))
        return out

    @property
    def pending(self) -> list[Request]:
        return self._view(self.proposals.pending)

    @property
    def orphans(self) -> list[Request]:
        return self._view(self.proposals.orphans)

    @property
    def backlog(self) -> list[Request]:
        out = []
        for w in self.proposals.backlog:
            if isinstance(w.waiter, AppendGroup):
                out += [Request(0, n, rid, w.deadline) for rid, n in zip(w.waiter.request_ids, w.waiter.counts)]
            else:
                out.append(Request(0, len(w.records), w.waiter.request_id, w.deadline))
        return out


def batch(n: int, term: int = 0) -> RecordBatch:
    return RecordBatch.encode(term, KIND_DATA, [b"p%d" % i for i in range(n)])


def append(svc: Service, conn: FakeConn, request_id: int, records: RecordBatch) -> None:
    """One request alone in its event-loop turn: read, then proposed at the node's next Ready pass."""
    svc.append(conn, request_id, records)
    svc.flush_staged()


def setup():
    node = FakeNode()
    svc = Service(node, request_timeout=5.0)
    conn = FakeConn()
    svc.handler_for(conn)
    return node, svc, conn


def test_requests_are_answered_when_their_last_index_commits_with_their_term():
    node, svc, conn = setup()
    node.raw.next = [(10, 3), (13, 3)]
    append(svc, conn, 1, batch(3))        # 10..12
    append(svc, conn, 2, batch(2))        # 13..14
    assert len(svc.pending) == 2 and node.kicks == 2
    svc.on_committed(9, batch(4, term=3))            # 9..12: settles request 1 only
    assert conn.frames == [(FRAME_APPENDED, 1, 10, 3)]
    svc.on_committed(13, batch(2, term=3))
    assert conn.frames[-1] == (FRAME_APPENDED, 2, 13, 2) and not svc.pending


def test_a_different_term_at_the_last_index_means_replaced():
    node, svc, conn = setup()
    node.raw.next = [(10, 3)]
    append(svc, conn, 1, batch(2))
    svc.on_committed(10, batch(2, term=4))
    (f,) = conn.frames
    assert f[0] == FRAME_ERROR and f[2] == ERR_NOT_LEADER and f[4] == "127.0.0.1:7002"


def test_overtaken_requests_wait_for_the_commit_verdict():
    node, svc, conn = setup()
    node.raw.next = [(10, 3), (8, 5)]
    append(svc, conn, 1, batch(5))        # 10..14 at term 3
    append(svc, conn, 2, batch(2))        # 8..9 at term 5: 10..14 were truncated here
    assert len(svc.orphans) == 1 and len(svc.pending) == 1
    # A later leader still held 10..14 of term 3 and committed them: the verdict is appended.
    svc.on_committed(8, RecordBatch.concat([batch(2, term=5), batch(5, term=3)]))
    assert sorted(f[1] for f in conn.frames if f[0] == FRAME_APPENDED) == [1, 2]
    assert not svc.orphans


def test_not_leader_timeout_and_shutdown():
    node, svc, conn = setup()
    node.raw.next = [NotLeader(2), (10, 3), (20, 3)]
    append(svc, conn, 1, batch(1))
    assert conn.frames[-1][:3] == (FRAME_ERROR, 1, ERR_NOT_LEADER)
    append(svc, conn, 2, batch(1))
    svc.expire(now=svc.pending[0].deadline + 1)
    assert conn.frames[-1][:3] == (FRAME_ERROR, 2, ERR_TIMEOUT)
    append(svc, conn, 3, batch(1))
    svc.shutdown()
    assert conn.frames[-1][:3] == (FRAME_ERROR, 3, ERR_SHUTTING_DOWN) and conn.closed
    late = FakeConn()
    append(svc, late, 4, batch(1))
    assert late.frames[-1][:3] == (FRAME_ERROR, 4, ERR_SHUTTING_DOWN)


def connections(n: int) -> tuple[list, list[FakeConn]]:
    """`n` client connections whose replies all land in one list, in the order they were sent."""
    frames: list = []
    return frames, [FakeConn(frames) for _ in range(n)]


def test_requests_read_in_one_turn_are_one_proposal():
    node, svc, _ = setup()
    frames, conns = connections(3)
    node.raw.next = [(10, 3)]
    for rid, (conn, n) in enumerate(zip(conns, (3, 1, 2)), 1):
        svc.append(conn, rid, batch(n))
    assert node.raw.proposed == [] and node.kicks == 3      # staged until the Ready pass
    svc.flush_staged()
    assert node.raw.proposed == [6]
    assert [(p.first, p.count, p.request_id) for p in svc.pending] == [(10, 3, 1), (13, 1, 2), (14, 2, 3)]
    svc.on_committed(10, batch(4, term=3))                  # 10..13: requests 1 and 2
    assert frames == [(FRAME_APPENDED, 1, 10, 3), (FRAME_APPENDED, 2, 13, 1)]
    svc.on_committed(14, batch(2, term=3))
    assert frames[-1] == (FRAME_APPENDED, 3, 14, 2) and not svc.pending


def test_one_connections_appends_of_one_turn_are_one_request_each_answered_at_its_offset():
    node, svc, conn = setup()
    node.raw.next = [(10, 3), (16, 3)]
    svc.append(conn, 1, batch(3))
    svc.append(conn, 2, batch(1))
    svc.append(conn, 3, batch(2))
    assert node.kicks == 1 and len(svc.proposals.staged) == 1
    svc.flush_staged()
    assert node.raw.proposed == [6] and len(svc.proposals.pending) == 1
    assert [(p.first, p.count, p.request_id) for p in svc.pending] == [(10, 3, 1), (13, 1, 2), (14, 2, 3)]
    svc.append(conn, 4, batch(1))                           # the next turn: a new group
    svc.flush_staged()
    svc.on_committed(10, batch(4, term=3))                  # the group's last index (15) is not committed yet
    assert conn.frames == []
    svc.on_committed(14, batch(3, term=3))
    assert conn.frames == [(FRAME_APPENDED, 1, 10, 3), (FRAME_APPENDED, 2, 13, 1), (FRAME_APPENDED, 3, 14, 2),
                           (FRAME_APPENDED, 4, 16, 1)]


def test_a_group_replaced_in_part_answers_each_member_by_its_own_last_index():
    """The group took 10..15 in term 3; a new leader kept 10..13 and replaced 14..15 (term 4):
    requests 1 and 2 are committed as proposed, request 3 was replaced."""
    node, svc, conn = setup()
    node.raw.next = [(10, 3)]
    svc.append(conn, 1, batch(3))
    svc.append(conn, 2, batch(1))
    svc.append(conn, 3, batch(2))
    svc.flush_staged()
    svc.on_committed(10, RecordBatch.concat([batch(4, term=3), batch(2, term=4)]))
    assert [f[:4] for f in conn.frames] == [(FRAME_APPENDED, 1, 10, 3), (FRAME_APPENDED, 2, 13, 1),
                                            (FRAME_ERROR, 3, ERR_NOT_LEADER, 2)]


def test_a_refused_group_answers_every_member_and_takes_no_more():
    node, svc, conn = setup()
    node.raw.next = [NotLeader(2), (20, 4)]
    svc.append(conn, 1, batch(2))
    svc.append(conn, 2, batch(1))
    svc.flush_staged()
    assert [f[:3] for f in conn.frames] == [(FRAME_ERROR, 1, ERR_NOT_LEADER), (FRAME_ERROR, 2, ERR_NOT_LEADER)]
    svc.append(conn, 3, batch(1))
    svc.flush_staged()
    assert [(p.first, p.request_id) for p in svc.pending] == [(20, 3)]


def test_a_session_append_closes_the_connections_group():
    """Plain appends after a session append are proposed after it (propose_now flushes what was staged before)."""
    node, svc, conn = setup()
    svc.append(conn, 1, batch(1))
    assert conn in svc.client.groups.open
    svc.client.append(conn, 2, RecordBatch.encode(0, KIND_SESSION, [b"not a header"]))
    assert conn not in svc.client.groups.open
    assert conn.frames[-1][:3] == (FRAME_ERROR, 2, ERR_BAD_REQUEST)


def test_a_group_stops_taking_appends_at_its_size():
    node, svc, conn = setup()
    node.raw.next = [(1, 3)]
    for rid in range(1, GROUP_ENTRIES // 4 + 2):
        svc.append(conn, rid, batch(4))
    svc.flush_staged()
    assert node.raw.proposed == [GROUP_ENTRIES + 4]
    assert [len(w.waiter.request_ids) for w in svc.proposals.pending] == [GROUP_ENTRIES // 4, 1]


def test_a_request_with_configuration_records_fails_alone():
    node, svc, conn = setup()
    refused = ValueError("configuration entries go through propose_conf_change")
    node.raw.next = [refused, (10, 3), refused]        # all staged together, then the group, then request 2
    mixed = RecordBatch.concat([batch(1), RecordBatch.encode(0, KIND_CONF, [b"{}"])])
    svc.append(conn, 1, batch(1))
    svc.append(conn, 2, mixed)
    svc.append(conn, 3, batch(1))
    svc.flush_staged()
    assert [f[:3] for f in conn.frames] == [(FRAME_ERROR, 2, ERR_BAD_REQUEST)]
    assert sorted((p.first, p.request_id) for p in svc.pending) == [(10, 1), (11, 3)]


def test_a_refused_batch_is_proposed_request_by_request():
    """The engine refuses the joined batch (here: not the leader any more, then leader again):
    every request then gets its own outcome, as if it had come alone."""
    node, svc, _ = setup()
    frames, conns = connections(2)
    node.raw.next = [NotLeader(2), NotLeader(2), (20, 4)]
    svc.append(conns[0], 1, batch(2))
    svc.append(conns[1], 2, batch(1))
    svc.flush_staged()
    assert node.raw.proposed == [3, 2, 1]
    assert frames[0][:3] == (FRAME_ERROR, 1, ERR_NOT_LEADER)
    assert [(p.first, p.request_id) for p in svc.pending] == [(20, 2)]


def test_staged_requests_are_answered_on_shutdown():
    node, svc, conn = setup()
    svc.append(conn, 1, batch(1))
    svc.append(conn, 2, batch(1))
    svc.shutdown()
    assert [f[:3] for f in conn.frames] == [(FRAME_ERROR, 1, ERR_SHUTTING_DOWN), (FRAME_ERROR, 2, ERR_SHUTTING_DOWN)]
    assert node.raw.proposed == []


def test_fallback_keeps_arrival_order_when_the_engine_refuses_for_budget():
    """The joined batch is over the engine's budget; request 1 fits alone, request 2 does not:
    2 and everything after it wait, in order, ahead of request 4 that came when the budget was full."""
    node, svc, _ = setup()
    _, conns = connections(4)
    node.budget = 6
    node.raw.next = [ProposalDropped("over"), (10, 3), ProposalDropped("over")]
    svc.append(conns[0], 1, batch(2))
    svc.append(conns[1], 2, batch(2))
    svc.append(conns[2], 3, batch(2))
    node.unwritten = 6                          # the budget filled up (e.g. by stepped AppendEntries)
    svc.append(conns[3], 4, batch(1))           # the write budget is full: straight to the backlog
    assert [w.request_id for w in svc.backlog] == [4]
    svc.flush_staged()
    assert node.raw.proposed == [6, 2, 2]       # joined, then 1 (fits), then 2 (refused); 3 not tried
    assert [(p.first, p.request_id) for p in svc.pending] == [(10, 1)]
    assert [w.request_id for w in svc.backlog] == [2, 3, 4]
    assert node.unwritten == 6 + 2              # only what was proposed still counts
    node.unwritten = 0                          # a Ready was taken: a fresh budget
    node.raw.next = [(12, 3), (14, 3), (16, 3)]
    svc.after_apply()
    assert [(p.first, p.request_id) for p in svc.pending] == [(10, 1), (12, 2), (14, 3), (16, 4)]


def test_a_bad_request_in_a_refused_batch_fails_alone():
    node, svc, _ = setup()
    frames, conns = connections(3)
    node.raw.next = [ValueError("configuration entries go through propose_conf_change"), (10, 3),
                     ValueError("configuration entries go through propose_conf_change"), (11, 3)]
    for rid, conn in enumerate(conns, 1):
        svc.append(conn, rid, batch(1))
    svc.flush_staged()
    assert [f[:3] for f in frames] == [(FRAME_ERROR, 2, ERR_BAD_REQUEST)]
    assert [(p.first, p.request_id) for p in svc.pending] == [(10, 1), (11, 3)]
    assert node.unwritten == 2


def test_requests_refused_as_not_leader_do_not_hold_the_write_budget():
    node, svc, _ = setup()
    frames, conns = connections(2)
    node.raw.next = [NotLeader(2), NotLeader(2), NotLeader(2)]
    svc.append(conns[0], 1, batch(3))
    svc.append(conns[1], 2, batch(3))
    svc.flush_staged()
    assert [f[:3] for f in frames] == [(FRAME_ERROR, 1, ERR_NOT_LEADER), (FRAME_ERROR, 2, ERR_NOT_LEADER)]
    assert node.unwritten == 0
