"""RawNode unit tests: the Ready contract, elections and replication over a lock-step network.

`Cluster` here is the smallest possible driver (etcd's `stabilize`): deliver every message,
persist every Ready, until nothing moves. Timing and faults live in the simulator tests.
"""
from __future__ import annotations

import random
import subprocess
import sys

import pytest

from raftlog.core.config import Config
from raftlog.core.messages import Message, MessageType
from raftlog.core.rawnode import RawNode, Ready, Role
from raftlog.errors import NotLeader, ProposalDropped
from raftlog.hot import KIND_DATA, KIND_NOOP, RecordBatch
from raftlog.core.storage import MemoryStorage


class Cluster:
    """N RawNodes on MemoryStorage with instant, reliable delivery."""

    def __init__(self, n: int, **cfg) -> None:
        ids = tuple(range(1, n + 1))
        self.storage = {i: MemoryStorage() for i in ids}
        self.nodes = {i: RawNode(Config(i, ids, **cfg), self.storage[i], random.Random(i)) for i in ids}
        self.applied: dict[int, list[tuple[int, int, int, bytes]]] = {i: [] for i in ids}
        self.sent: list[Message] = []
        self.down: set[int] = set()

    def stabilize(self, rounds: int = 100) -> None:
        for _ in range(rounds):
            inbox: list[Message] = []
            moved = False
            for i, node in self.nodes.items():
                if i in self.down or not node.has_ready():
                    continue
                moved = True
                rd = node.ready()
                inbox += rd.messages
                self.storage[i].save(hard_state=rd.hard_state, truncate_from=rd.truncate_from,
                                     first_index=rd.entries_index, records=rd.entries)
                inbox += rd.persisted_messages
                for first, batch in rd.committed:
                    self.applied[i] += batch.entries(first)
                node.advance(rd)
            self.sent += inbox
            for m in inbox:
                moved = self.deliver(m) or moved
            if not moved:
                return
        raise AssertionError("cluster did not stabilize")

    def deliver(self, m: Message) -> bool:
        """Hand `m` to its recipient unless either end is down; True when delivered."""
        if m.to in self.down or m.frm in self.down:
            return False
        self.nodes[m.to].step(m)
        return True

    def leader(self) -> RawNode:
        leaders = [n for i, n in self.nodes.items() if n.role is Role.LEADER and i not in self.down]
        assert len(leaders) == 1, [n.status() for n in self.nodes.values()]
        return leaders[0]


def test_importing_core_loads_nothing_above_it() -> None:
    """The engine is pure: importing every module of raftlog.core loads no storage, runtime or
    simulator module, and neither asyncio, socket nor lmdb (docs/architecture.md, section 1)."""
    code = ("import importlib, pkgutil, sys, raftlog.core as core; "
            "[importlib.import_module('raftlog.core.' + m.name) for m in pkgutil.iter_modules(core.__path__)]; "
            "bad = sorted(m for m in sys.modules if m in ('asyncio', 'socket', 'lmdb') "
            "or m.startswith(('raftlog.storage', 'raftlog.runtime', 'raftlog.sim', 'raftlog.wire', "
            "'raftlog.bench', 'raftlog.client', 'raftlog.embed'))); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_single_node_elects_itself_and_commits_once_durable() -> None:
    """A lone voter wins on its own (durable) vote and commits once its own write is durable (§5.2, §5.3)."""
    c = Cluster(1)
    node = c.nodes[1]
    node.campaign()
    rd = node.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.must_sync
    assert node.role is Role.CANDIDATE          # its vote is not durable yet
    c.storage[1].save(hard_state=rd.hard_state)
    node.advance(rd)
    assert node.role is Role.LEADER
    c.stabilize()
    first, term = node.propose([b"a", b"b"])
    assert (first, term) == (2, 1)
    rd = node.ready()
    assert rd.entries_index == 2 and len(rd.entries) == 2
    assert not rd.committed and node.commit_index == 1   # not durable yet: not committed
    c.storage[1].save(records=rd.entries, first_index=rd.entries_index, hard_state=rd.hard_state)
    node.advance(rd)
    assert node.commit_index == 3
    c.stabilize()
    assert [(i, k, p) for i, _t, k, p in c.applied[1]] == [(1, KIND_NOOP, b""), (2, KIND_DATA, b"a"),
                                                           (3, KIND_DATA, b"b")]


def test_three_nodes_elect_replicate_and_commit() -> None:
    """Election (§5.2), the leader's no-op (§8), replication and commit (§5.3)."""
    c = Cluster(3)
    c.nodes[1].campaign()
    c.stabilize()
    leader = c.leader()
    assert leader.id == 1 and leader.term == 1
    first, term = leader.propose([b"x%d" % k for k in range(10)])
    c.stabilize()
    for i in c.nodes:
        assert c.nodes[i].commit_index == first + 9
        assert [p for _i, _t, k, p in c.applied[i] if k == KIND_DATA] == [b"x%d" % k for k in range(10)]


def test_proposal_on_follower_raises_not_leader_with_leader_id() -> None:
    c = Cluster(3)
    c.nodes[2].campaign()
    c.stabilize()
    with pytest.raises(NotLeader) as err:
        c.nodes[1].propose([b"x"])
    assert err.value.leader_id == 2


def test_record_batch_proposal_is_restamped_with_leader_term() -> None:
    c = Cluster(3)
    c.nodes[1].campaign()
    c.stabilize()
    first, term = c.nodes[1].propose(RecordBatch.encode(0, KIND_DATA, [b"p", b"q"]))
    c.stabilize()
    assert [(i, t) for i, t, _k, _p in c.applied[3][-2:]] == [(first, term), (first + 1, term)]


def test_uncommitted_budget_drops_proposals() -> None:
    c = Cluster(3, max_uncommitted_bytes=100)
    c.nodes[1].campaign()
    c.stabilize()
    leader = c.nodes[1]
    leader.propose([b"x" * 80])
    with pytest.raises(ProposalDropped):
        leader.propose([b"y" * 80])
    c.stabilize()
    leader.propose([b"y" * 80])     # committed: the budget is free again


def held_until_durable(node: RawNode, rd: Ready, request: Message, kind: MessageType) -> list[Message]:
    """The `kind` replies to `request` that `rd` releases: asserted to be in its persisted_messages only.

    `request` is delivered once more while `rd` is outstanding (a duplicate, as networks do):
    its reply must not be handed out by take_messages either, but wait for the next Ready.
    """
    assert kind not in {m.type for m in rd.messages}, f"{kind.name} may be sent before its Ready is durable"
    node.step(request)
    assert kind not in {m.type for m in node.take_messages()}, f"{kind.name} handed out while the write is in flight"
    return [m for m in rd.persisted_messages if m.type == kind]


def test_vote_and_ack_wait_for_persistence() -> None:
    """A granted vote and an AppendEntries ack go out only with the Ready that makes them durable
    (Figure 2: persistent state is updated on stable storage before responding to RPCs; diss. 3.8);
    a pre-vote reply changes nothing durable and goes at once (diss. 9.6); the leader's own
    AppendEntries go at once too, in parallel with its write (diss. 10.2.1)."""
    c = Cluster(3)
    c.nodes[1].campaign()
    rd = c.nodes[1].ready()     # pre-vote requests: may go now
    assert {m.type for m in rd.messages} == {MessageType.PRE_VOTE}
    c.nodes[1].advance(rd)
    voter = c.nodes[2]
    voter.step(next(m for m in rd.messages if m.to == 2))
    vrd = voter.ready()
    assert vrd.hard_state is None, "a pre-vote must not change the voter's term or vote"
    assert [(m.type, m.to, m.reject) for m in vrd.messages] == [(MessageType.PRE_VOTE_RESP, 1, False)]
    voter.advance(vrd)
    c.nodes[1].step(vrd.messages[0])    # one pre-vote besides its own: a majority of three, it campaigns
    rd = c.nodes[1].ready()
    assert {m.type for m in rd.messages} == {MessageType.VOTE}
    c.storage[1].save(hard_state=rd.hard_state)
    c.nodes[1].advance(rd)
    vote = next(m for m in rd.messages if m.to == 2)
    voter.step(vote)
    vrd = voter.ready()
    assert vrd.hard_state is not None and (vrd.hard_state.term, vrd.hard_state.vote) == (rd.hard_state.term, 1)
    assert vrd.must_sync
    granted = held_until_durable(voter, vrd, vote, MessageType.VOTE_RESP)
    assert [(m.to, m.reject) for m in granted] == [(1, False)]
    c.storage[2].save(hard_state=vrd.hard_state)
    voter.advance(vrd)
    c.nodes[1].step(granted[0])
    c.stabilize()
    leader = c.nodes[1]
    assert leader.role is Role.LEADER
    first, _ = leader.propose([b"z"])
    rd = leader.ready()
    assert {m.type for m in rd.messages} == {MessageType.APPEND}
    c.storage[1].save(hard_state=rd.hard_state, first_index=rd.entries_index, records=rd.entries)
    leader.advance(rd)
    follower = c.nodes[2]
    append = next(m for m in rd.messages if m.to == 2)
    follower.step(append)
    frd = follower.ready()
    assert frd.entries is not None and frd.entries_index + len(frd.entries) - 1 >= first and frd.must_sync
    acks = held_until_durable(follower, frd, append, MessageType.APPEND_RESP)
    assert [(m.to, m.index, m.reject) for m in acks] == [(1, first, False)]


def test_leader_sends_while_own_write_in_flight_and_counts_itself_once_durable() -> None:
    c = Cluster(3)
    c.nodes[1].campaign()
    c.stabilize()
    leader = c.nodes[1]
    first, _ = leader.propose([b"a"])
    rd = leader.ready()             # the leader's own write is now "in flight"
    for m in rd.messages:
        c.nodes[m.to].step(m)
    # followers persist and ack; the leader's write is still not durable
    for i in (2, 3):
        frd = c.nodes[i].ready()
        c.storage[i].save(hard_state=frd.hard_state, first_index=frd.entries_index, records=frd.entries)
        c.nodes[i].advance(frd)
        for m in frd.persisted_messages:
            leader.step(m)
    assert leader.commit_index == first     # two followers are a majority without the leader
    assert leader.status()["progress"]["1"]["match"] == first - 1
    c.storage[1].save(hard_state=rd.hard_state, first_index=rd.entries_index, records=rd.entries)
    leader.advance(rd)
    assert leader.status()["progress"]["1"]["match"] == first


def test_ready_outstanding_blocks_second_ready() -> None:
    c = Cluster(1)
    node = c.nodes[1]
    node.campaign()
    rd = node.ready()
    assert not node.has_ready()
    with pytest.raises(RuntimeError):
        node.ready()
    node.advance(rd)
    assert node.has_ready()


def test_restart_resumes_from_storage() -> None:
    c = Cluster(3)
    c.nodes[1].campaign()
    c.stabilize()
    c.nodes[1].propose([b"a", b"b"])
    c.stabilize()
    st = c.storage[2]
    node = RawNode(Config(2, (1, 2, 3), applied=3), st, random.Random(9))
    assert node.term == 1 and node.commit_index == 3 and node.last_index == 3
    assert not node.ready().committed     # already applied before the restart


def _leader_with_entries(n_entries: int) -> Cluster:
    c = Cluster(3)
    c.nodes[1].campaign()
    c.stabilize()
    c.nodes[1].propose([b"e%d" % k for k in range(n_entries)])
    c.stabilize()
    return c


def test_stale_append_never_truncates_matched_entries() -> None:
    """§5.3 receiver rule 3: only a conflicting entry truncates; a delayed duplicate changes nothing."""
    c = _leader_with_entries(5)
    follower = c.nodes[2]
    last = follower.last_index
    old = next(m for m in c.sent if m.type == MessageType.APPEND and m.to == 2 and m.entries is not None
               and len(m.entries))
    follower.step(old)
    rd = follower.ready()
    assert rd.truncate_from == 0 and rd.entries is None
    assert follower.last_index == last
    ack = rd.persisted_messages[0]
    assert ack.type == MessageType.APPEND_RESP and not ack.reject and ack.index <= last
    follower.advance(rd)


def test_stale_ack_never_lowers_match() -> None:
    c = _leader_with_entries(5)
    leader = c.nodes[1]
    match = leader.status()["progress"]["2"]["match"]
    leader.step(Message(MessageType.APPEND_RESP, 1, 2, leader.term, index=1))
    assert leader.status()["progress"]["2"]["match"] == match
    leader.step(Message(MessageType.APPEND_RESP, 1, 2, leader.term, index=1, reject=True, hint_index=0))
    assert leader.status()["progress"]["2"]["match"] == match


def test_rejection_hint_skips_a_whole_term() -> None:
    """diss. 5.3: a follower rejecting AppendEntries names the last index of a term at or below prev_term."""
    c = _leader_with_entries(5)
    follower = c.nodes[3]
    term = follower.term
    follower.step(Message(MessageType.APPEND, 3, 1, term, log_term=term + 5, index=follower.last_index + 10))
    rd = follower.ready()
    rej = rd.persisted_messages[0]
    assert rej.reject and rej.hint_index == follower.last_index and rej.hint_term == term


def test_higher_term_steps_down_and_is_persisted_before_reply() -> None:
    """§5.1: any higher term makes a leader follow; the reply waits for the new term to be durable."""
    c = _leader_with_entries(1)
    leader = c.nodes[1]
    leader.step(Message(MessageType.APPEND_RESP, 1, 3, leader.term + 3))
    assert leader.role is Role.FOLLOWER and leader.term == 4
    rd = leader.ready()
    assert rd.hard_state is not None and rd.hard_state.term == 4 and rd.must_sync
    leader.advance(rd)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        Config(1, (1, 2, 3), election_ticks=(5, 5))
    with pytest.raises(ValueError):
        Config(0, (1,))
    with pytest.raises(ValueError):
        Config(1, (1,), heartbeat_ticks=20)
