"""Simulation of exactly-once appends: clients with sessions retry across crashes, partitions and lost replies.

Each simulated client numbers its requests; a request is sent to whoever leads, and resent
(same session and seq) when its reply is lost (randomly, even after it committed), when it
does not commit within a while, or after the leader it went to crashed. Every node applies
the session table from its committed log (SessionTable); the leader decides with a
SessionFront. Checks:
- every acknowledgement of a request, first or retried, names the same index;
- no payload is committed twice, and no node's table ever applied a duplicate header;
- every acknowledged request's payloads are in the log at the acknowledged indexes;
- a table serialized at any point (a snapshot) and restored equals the live one, and keeps
  evolving identically;
- sessions expire by log time only: an idle client's next request is refused as expired.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from raftlog.core.sessions import SessionFront, SessionTable, encode_header, restamp
from raftlog.sim.simulation import ALL_FAULTS, SimNode, SimOptions, Simulation
from raftlog.errors import NotLeader, ProposalDropped
from raftlog.hot import KIND_DATA, KIND_SESSION, RecordBatch

_SESSION_CLIENT = 110


@dataclass
class SimClient:
    session: int
    seq: int = 0
    payloads: list = field(default_factory=list)
    waiting: Optional[tuple[int, int, int]] = None     # (first data index, count, term) of the current attempt
    sent_at: int = 0
    acked: dict = field(default_factory=dict)          # seq -> (first, count)
    expired: bool = False


class SessionSimulation(Simulation):
    """A Simulation whose clients append through sessions; see the module docstring."""

    def __init__(self, opts: SimOptions, clients: int = 4, timeout_ms: int = 600_000,
                 trace: Optional[Callable[[str], None]] = None) -> None:
        self.timeout_ms = timeout_ms
        self.tables: dict[int, SessionTable] = {}
        self.fronts: dict[int, SessionFront] = {}
        super().__init__(opts, trace)
        self.clients = [SimClient(session=1000 + k) for k in range(clients)]
        self.acks = 0
        self.retries = 0
        self.snapshots_checked = 0

    def table(self, node_id: int) -> SessionTable:
        t = self.tables.get(node_id)
        if t is None:
            t = self.tables[node_id] = SessionTable(self.timeout_ms)
        return t

    def start(self, node_id: int) -> None:
        super().start(node_id)
        # The state machine (and so the table) is durable in this model; the front is not.
        self.fronts[node_id] = SessionFront(self.table(node_id))

    def apply(self, node: SimNode, first: int, batch) -> None:
        super().apply(node, first, batch)
        t = self.table(node.id)
        t.apply_batch(first, batch)
        if t.duplicates:
            self.fail(f"node {node.id} applied a duplicate session request")
        self.fronts[node.id].applied_to(node.applied_index)
        if self.rng.random() < 0.02:
            # A snapshot of the table, restored: identical, now and as it evolves.
            restored = SessionTable.from_bytes(t.to_bytes())
            if restored.to_bytes() != t.to_bytes():
                self.fail(f"node {node.id}: session table does not survive a snapshot round trip")
            self.tables[node.id] = restored
            self.fronts[node.id].table = restored
            self.snapshots_checked += 1

    # -- clients -------------------------------------------------------------------------
    def _dispatch(self, kind: int, args: tuple) -> None:
        if kind == _SESSION_CLIENT:
            self.client_step()
        else:
            super()._dispatch(kind, args)

    def client_step(self) -> None:
        if self.chaos:
            self._push(self.now + 1 + int(self.rng.expovariate(1 / 15)), _SESSION_CLIENT)
        c = self.rng.choice(self.clients)
        self.drive(c)

    def drive(self, c: SimClient, resend_p: float = 0.15) -> None:
        """Move one client forward: collect an ack, resend, or start its next request."""
        if c.expired:
            return
        if c.waiting is not None:
            first, count, term = c.waiting
            if self.is_committed(first - 1, term):
                self.ack(c, (first, count))
                c.waiting = None
            elif self.now - c.sent_at > 300:
                self.retries += 1
                self.send_request(c)          # no answer in time: resend the same seq
            return
        if c.seq and c.seq not in c.acked:
            self.retries += 1
            self.send_request(c)              # not answered yet (no leader, not ready): try again
            return
        if c.seq and self.rng.random() < resend_p:
            self.retries += 1
            self.send_request(c)              # its reply was "lost": resend the acknowledged seq
            return
        c.seq += 1
        c.payloads = [b"c%d-q%d-%d" % (c.session, c.seq, k) for k in range(self.rng.randint(1, 3))]
        self.send_request(c)

    def ack(self, c: SimClient, result: tuple[int, int]) -> None:
        prev = c.acked.get(c.seq)
        if prev is not None and prev != result:
            self.fail(f"session {c.session} seq {c.seq} acknowledged at {prev} and again at {result}")
        c.acked[c.seq] = result
        self.acks += 1

    def send_request(self, c: SimClient) -> None:
        c.sent_at = self.now
        lid = self.leader()
        if lid is None:
            return
        node = self.nodes[lid]
        raw = node.raw
        front = self.fronts[lid]
        floor = min([c.seq] + [q for q in range(1, c.seq) if q not in c.acked])
        state, res = front.check(raw, c.session, c.seq, floor)
        if state == "done":
            self.ack(c, res)
            c.waiting = None
        elif state == "pending":
            c.waiting = res
        elif state == "expired":
            c.expired = True
            self.log(f"session {c.session} expired at seq {c.seq}")
        elif state == "propose":
            head = RecordBatch.encode(0, KIND_SESSION, [encode_header(c.session, c.seq, floor, len(c.payloads))])
            batch = restamp(RecordBatch.concat([head, RecordBatch.encode(0, KIND_DATA, c.payloads)]), raw.term,
                            self.now)
            try:
                first, term = raw.propose(batch)
            except (NotLeader, ProposalDropped):
                return
            front.proposed(c.session, c.seq, first, len(c.payloads), term)
            c.waiting = (first + 1, len(c.payloads), term)
            self.pump(node)

    def run(self, duration_ms: int):
        self._push(1, _SESSION_CLIENT)
        return super().run(duration_ms)

    def check_end_state(self) -> None:
        super().check_end_state()
        # Settle every client's last request, then check exactly-once over the whole log.
        deadline = self.now + 5000
        while self.now < deadline and any(c.seq and c.seq not in c.acked for c in self.clients if not c.expired):
            for c in self.clients:
                self.drive(c, resend_p=0.0)
            self.run_for(20)
        if not self.run_for(5000, lambda: len(self.applied_log) >= len(self.committed_terms)
                            and all(n.applied_index >= len(self.committed_terms) for n in self.nodes.values())):
            self.fail("committed entries were not applied everywhere")
        seen: dict[bytes, int] = {}
        for index, (_term, kind, payload) in enumerate(self.applied_log, 1):
            if kind == KIND_DATA and payload.startswith(b"c"):
                if payload in seen:
                    self.fail(f"payload {payload!r} committed twice: at {seen[payload]} and {index}")
                seen[payload] = index
        for c in self.clients:
            for seq, (first, count) in c.acked.items():
                for k in range(count):
                    want = b"c%d-q%d-%d" % (c.session, seq, k)
                    if seen.get(want) != first + k:
                        self.fail(f"session {c.session} seq {seq}: {want!r} not at acknowledged index {first + k}")
        tables = {i: t.to_bytes() for i, t in self.tables.items()
                  if self.nodes[i].applied_index == len(self.applied_log)}
        if len(set(tables.values())) > 1:
            self.fail("nodes that applied the same log hold different session tables")


def run_session_seed(nodes: int, seed: int, duration_ms: int = 2000, faults: tuple[str, ...] = ALL_FAULTS,
                     trace: Optional[Callable[[str], None]] = None, **overrides) -> SessionSimulation:
    """One randomized exactly-once run; raises InvariantViolation."""
    sim = SessionSimulation(SimOptions(nodes=nodes, seed=seed, faults=tuple(faults), **overrides), trace=trace)
    sim.run(duration_ms)
    return sim
