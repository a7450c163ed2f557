"""Simulation of membership changes and leadership transfer on top of raftlog.sim.simulation.

`ConfSimulation` starts `voters` members plus `spares` nodes that know no configuration
(they join the way `raftlog node --join` does: they wait to be added and learn everything
from the log). Besides the base simulator's faults, a change event fires every
`change_every_ms`: the leader is asked to add a learner, promote one, add or remove a voter
(the leader itself, a crashed or partitioned node, or any other), or to transfer its
leadership. Removed ids are never reused.

Invariants added to the base ones (election safety is already checked across every node,
old and new configurations alike):
- committed configuration entries form one chain: each names as its predecessor exactly
  the configuration the previous committed one produced (at most one change in flight);
- the engine refuses a second change while one is in flight;
- every node uses the configuration of the last configuration entry in its log;
- after healing, the change in flight completes (no joint configuration remains), every
  member of the final configuration catches up, and a leader is among them;
- reads (ReadIndex, and lease reads) issued at random nodes: a read is served once its node
  has applied its read index, and that index covers every entry committed anywhere in the
  cluster before the read was issued (a linearizable read never misses an acknowledged append).
"""
from __future__ import annotations

import json

from dataclasses import dataclass
from typing import Callable, Optional

from raftlog.core import confchange
from raftlog.core.config import Config
from raftlog.core.messages import ConfState
from raftlog.sim.simulation import ALL_FAULTS, SimNode, SimOptions, Simulation, SimStats
from raftlog.errors import NotLeader, ProposalDropped
from raftlog.hot import KIND_CONF

_CHANGE = 100
_READ = 101


@dataclass
class ConfSimOptions(SimOptions):
    """SimOptions plus the membership workload. `nodes` counts voters + spares."""

    voters: int = 3
    change_every_ms: int = 250
    transfer_p: float = 0.15          # chance that a change event is a leadership transfer instead
    read_every_ms: int = 20           # mean gap between reads (0 = no read workload)
    lease_p: float = 0.3              # share of reads that may use the leader lease


@dataclass
class ConfSimStats(SimStats):
    """SimStats plus membership counts."""

    changes_proposed: int = 0
    changes_committed: int = 0
    changes_refused: int = 0
    leader_removed: int = 0
    transfers: int = 0
    reads_issued: int = 0
    reads_served: int = 0
    lease_reads_served: int = 0


class ConfSimulation(Simulation):
    """A Simulation whose membership changes while it runs; see the module docstring."""

    def __init__(self, opts: ConfSimOptions, trace: Optional[Callable[[str], None]] = None) -> None:
        if not 1 <= opts.voters <= opts.nodes:
            raise ValueError("voters must be in [1, nodes]")
        self.initial = tuple(range(1, opts.voters + 1))
        self.retired: set[int] = set()        # ids removed (or asked to be): never added again
        self.used: set[int] = set(self.initial)
        self.committed_conf = ConfState(voters=self.initial)
        self.changes = True                   # random change events enabled
        self.reads: dict[bytes, tuple[int, int, int, bool]] = {}   # ctx -> (node, issued at, floor, lease)
        self.waiting_reads: dict[int, list[tuple[int, bytes]]] = {}  # node -> released (index, ctx), not applied yet
        self.served: list[tuple[bytes, int, int]] = []           # (ctx, node, index served)
        self._read_seq = 0
        self.issued_reads: set[bytes] = set()
        super().__init__(opts, trace)
        self.stats = ConfSimStats()

    # -- nodes ---------------------------------------------------------------------------

    def config(self, node_id: int, applied: int) -> Config:
        o = self.opts
        joining = node_id not in self.initial
        return Config(node_id, () if joining else self.initial, election_ticks=o.election_ticks,
                      heartbeat_ticks=o.heartbeat_ticks, pre_vote=o.pre_vote, check_quorum=o.check_quorum,
                      max_msg_bytes=o.max_msg_bytes, max_inflight_msgs=o.max_inflight_msgs, applied=applied,
                      join=joining)

    def conf_of(self, node_id: int) -> Optional[ConfState]:
        n = self.nodes[node_id]
        return n.raw.conf_state if n.up else None

    # -- invariants ----------------------------------------------------------------------

    def _apply_conf_checked(self, node: SimNode, first: int, batch) -> None:
        before = len(self.applied_log)
        super().apply(node, first, batch)
        # Newly committed configuration entries must chain (one change at a time).
        for index in range(before + 1, len(self.applied_log) + 1):
            term, kind, payload = self.applied_log[index - 1]
            if kind != KIND_CONF:
                continue
            conf, prev, changes = confchange.decode_entry(payload)
            if prev != self.committed_conf:
                self.fail(f"configuration entry {index} follows {confchange.describe(prev)}, but the "
                          f"committed configuration was {confchange.describe(self.committed_conf)}")
            self.committed_conf = conf
            self.stats.changes_committed += 1
            self.log(f"committed configuration {confchange.describe(conf)} at {index}")

    def check_conf_matches_log(self, node: SimNode) -> None:
        """A node's configuration is the one its last configuration entry produced (or the bootstrap one)."""
        raw = node.raw
        lg = raw.raft.log
        found = confchange.scan_log(lg, 1, lg.last_index + 1)
        if found:
            want = confchange.decode_entry(found[-1][1])[0]
        elif node.id in self.initial:
            want = ConfState(voters=self.initial)
        else:
            want = ConfState()
        have = raw.conf_state
        if (have.voters, have.voters_outgoing, have.learners) != (want.voters, want.voters_outgoing, want.learners):
            self.fail(f"node {node.id} uses {confchange.describe(have)}, its log says {confchange.describe(want)}")

    def disk_done(self, node_id: int, gen: int) -> None:
        super().disk_done(node_id, gen)
        node = self.nodes[node_id]
        if node.up and node.raw is not None and node.writing is None:
            # What was just saved and the node's memory agree on the configuration.
            st = node.storage.conf_state()
            if st is not None and node.raw.raft.log.written == node.raw.last_index \
                    and not node.raw.raft.log.has_unstable() and st != node.raw.conf_state:
                self.fail(f"node {node_id} stored {confchange.describe(st)} but uses "
                          f"{confchange.describe(node.raw.conf_state)}")

    # -- reads ---------------------------------------------------------------------------

    def read(self, node_id: int, lease: bool = False) -> Optional[bytes]:
        """Issue a read at node_id; its ctx, or None when the node refuses (down, no leader known)."""
        node = self.nodes[node_id]
        if not node.up:
            return None
        self._read_seq += 1
        ctx = b"read-%d" % self._read_seq
        try:
            node.raw.read_index(ctx, lease=lease)
        except NotLeader:
            return None
        self.reads[ctx] = (node_id, self.now, len(self.committed_terms), lease)
        self.issued_reads.add(ctx)
        self.stats.reads_issued += 1
        self.pump(node)
        return ctx

    def on_read_states(self, node: SimNode, states: list) -> None:
        for index, ctx in states:
            if ctx not in self.reads:
                if ctx in self.issued_reads:
                    continue      # a duplicated request or reply released it twice: served once
                self.fail(f"node {node.id} released an unknown read {ctx!r}")
            if self.reads[ctx][0] != node.id:
                self.fail(f"node {node.id} released read {ctx!r} issued at node {self.reads[ctx][0]}")
            self.waiting_reads.setdefault(node.id, []).append((index, ctx))
        self.serve_reads(node)

    def serve_reads(self, node: SimNode) -> None:
        """Serve released reads whose index the node has applied; check they miss no earlier commit."""
        waiting = self.waiting_reads.get(node.id)
        if not waiting:
            return
        keep = []
        for index, ctx in waiting:
            if node.applied_index < index:
                keep.append((index, ctx))
                continue
            if ctx not in self.reads:
                continue          # released twice (duplicates) and already served
            _, issued, floor, lease = self.reads.pop(ctx)
            if index < floor:
                self.fail(f"read {ctx!r} at node {node.id} (issued at {issued / 1000:.3f}s) served index {index}, "
                          f"but {floor} entries were committed before it began")
            self.served.append((ctx, node.id, node.applied_index))
            self.stats.reads_served += 1
            if lease:
                self.stats.lease_reads_served += 1
        self.waiting_reads[node.id] = keep

    def apply(self, node: SimNode, first: int, batch) -> None:
        self._apply_conf_checked(node, first, batch)
        self.serve_reads(node)

    def random_read(self) -> None:
        o = self.opts
        rng = self.rng
        if not self.changes:
            return
        self._push(self.now + 1 + int(rng.expovariate(1 / o.read_every_ms)), _READ)
        lid = self.leader()
        target = lid if lid is not None and rng.random() < 0.6 else rng.choice(self.ids)
        self.read(target, lease=rng.random() < o.lease_p)

    # -- the change workload -------------------------------------------------------------

    def _dispatch(self, kind: int, args: tuple) -> None:
        if kind == _CHANGE:
            self.random_change()
        elif kind == _READ:
            self.random_read()
        else:
            super()._dispatch(kind, args)

    def propose_change(self, changes: list[dict]) -> Optional[tuple[int, int]]:
        """Ask the current leader for `changes`; None when there is none or it refuses."""
        lid = self.leader()
        if lid is None:
            return None
        raw = self.nodes[lid].raw
        settled = raw.conf_settled()
        try:
            at = raw.propose_conf_change(changes)
        except (NotLeader, ProposalDropped, confchange.ConfChangeError):
            self.stats.changes_refused += 1
            return None
        if not settled:
            self.fail(f"leader {lid} accepted a change while another was in flight")
        self.stats.changes_proposed += 1
        for ch in changes:
            if ch["op"] == confchange.REMOVE:
                self.retired.add(ch["id"])
                if ch["id"] == lid:
                    self.stats.leader_removed += 1
            self.used.add(ch["id"])
        self.log(f"leader {lid} proposed {changes} at {at[0]}")
        self.pump(self.nodes[lid])
        return at

    def random_change(self) -> None:
        o = self.opts
        rng = self.rng
        if not self.changes:
            return
        self._push(self.now + 1 + int(rng.expovariate(1 / o.change_every_ms)), _CHANGE)
        lid = self.leader()
        if lid is None:
            return
        raw = self.nodes[lid].raw
        conf = raw.conf_state
        if rng.random() < o.transfer_p:
            others = [v for v in raw.raft.all_voters if v != lid]
            if others:
                to = rng.choice(others)
                self.stats.transfers += 1
                self.log(f"leader {lid} asked to transfer leadership to {to}")
                raw.transfer_leadership(to)
                self.pump(self.nodes[lid])
            return
        voters = list(conf.voters)
        learners = list(conf.learners)
        spares = [i for i in self.ids if i not in self.used]
        choice = rng.random()
        if learners and choice < 0.35:
            self.propose_change([confchange.change(confchange.PROMOTE, rng.choice(learners))])
        elif spares and choice < 0.6:
            op = confchange.ADD_LEARNER if rng.random() < 0.8 else confchange.ADD_VOTER
            self.propose_change([confchange.change(op, spares[0])])
        elif choice < 0.75 and len(voters) >= 2:
            # An arbitrary change (joint consensus proper): several voters at once.
            k = rng.randint(1, min(2, len(voters) - 1))
            out = rng.sample(voters, k)
            changes = [confchange.change(confchange.REMOVE, v) for v in out]
            changes += [confchange.change(confchange.ADD_VOTER, i) for i in spares[:rng.randint(0, 2)]]
            changes += [confchange.change(confchange.PROMOTE, i) for i in learners[:rng.randint(0, 2)]]
            self.propose_change(changes)
        elif len(voters) > 2 or (learners and rng.random() < 0.5):
            if learners and rng.random() < 0.2:
                victim = rng.choice(learners)
            else:
                down = [v for v in voters if not self.nodes[v].up
                        or any((v, x) in self.blocked for x in self.ids)]
                r = rng.random()
                if r < 0.3:
                    victim = lid
                elif r < 0.6 and down:
                    victim = rng.choice(down)
                else:
                    victim = rng.choice(voters)
            self.propose_change([confchange.change(confchange.REMOVE, victim)])

    def settle(self, within_ms: int = 5000) -> None:
        """Wait until a leader's configuration is settled (no change in flight); InvariantViolation if not."""
        def done() -> bool:
            # A removed leader steps down at its next Ready after C_new commits: wait past that.
            lid = self.leader()
            return lid is not None and self.nodes[lid].raw.conf_settled() \
                and lid in self.nodes[lid].raw.conf_state.voters
        if not self.run_for(within_ms, done):
            self.fail(f"the configuration change did not complete within {within_ms} ms")

    def change_and_settle(self, changes: list[dict], within_ms: int = 8000) -> None:
        """Propose `changes` (retrying at whoever leads) and wait until they are committed and complete."""
        deadline = self.now + within_ms
        while self.now < deadline:
            self.settle(max(1, deadline - self.now))
            at = self.propose_change(changes)
            if at is not None:
                if self.run_until(deadline, lambda at=at: self.is_committed(*at)):
                    self.settle(max(1, deadline - self.now))
                    return
            else:
                self.run_for(20)
        self.fail(f"change {changes} not completed within {within_ms} ms")

    def caught_up(self, node_id: int, lag: int = 0) -> bool:
        """True when node_id's log holds the leader's commit index (minus `lag`)."""
        lid = self.leader()
        n = self.nodes[node_id]
        return lid is not None and n.up and n.raw.last_index + lag >= self.nodes[lid].raw.commit_index

    # -- a whole run ---------------------------------------------------------------------

    def run(self, duration_ms: int) -> SimStats:
        """Chaos with membership changes for duration_ms, then heal; checks as in the base, over the final members."""
        self._push(1 + int(self.rng.expovariate(1 / self.opts.change_every_ms)), _CHANGE)
        if self.opts.read_every_ms:
            self._push(1 + int(self.rng.expovariate(1 / self.opts.read_every_ms)), _READ)
        self.run_until(0)
        result = super().run(duration_ms)
        return result

    def heal_all(self) -> None:
        self.changes = False
        super().heal_all()

    def check_end_state(self) -> None:
        """The change in flight completes; members of the final configuration catch up; logs agree."""
        self.settle(self.opts.liveness_bound_ms)
        lid = self.leader()
        final = self.nodes[lid].raw.conf_state
        if lid not in final.voters:
            self.fail(f"leader {lid} is not a voter of its configuration {confchange.describe(final)}")
        target_members = confchange.members(final)
        bound = self.opts.catch_up_bound_ms
        known = self.committed_terms

        def caught_up() -> bool:
            target = len(known)
            return all(self.nodes[i].up and self.nodes[i].applied_index >= target
                       and self.nodes[i].storage.last_index() >= target for i in target_members)

        if not self.run_for(bound, caught_up):
            lag = {i: (self.nodes[i].applied_index, self.nodes[i].storage.last_index()) for i in target_members}
            self.fail(f"members did not catch up to {len(known)} within {bound} ms: {lag}")
        if final != self.committed_conf:
            self.fail(f"leader's configuration {confchange.describe(final)} is not the committed one "
                      f"{confchange.describe(self.committed_conf)}")
        self.check_log_matching()
        truth = self.applied_log
        self.stats.proposals_committed = sum(1 for _, k, _ in truth if k == 0)
        for n in self.nodes.values():
            if n.applied[:len(truth)] != truth[:len(n.applied)]:
                self.fail(f"node {n.id} applied a different sequence")
            if n.up:
                self.check_conf_matches_log(n)
        for i in target_members:
            n = self.nodes[i]
            stored = n.storage.records(1, len(known) + 1).entries(1)
            for index, term, kind, payload in stored:
                if truth[index - 1] != (term, kind, payload):
                    self.fail(f"node {i} holds {(term, kind, payload)} at committed index {index}")


def run_conf_seed(voters: int, spares: int, seed: int, duration_ms: int = 3000,
                  faults: tuple[str, ...] = ALL_FAULTS, trace: Optional[Callable[[str], None]] = None,
                  **overrides) -> ConfSimStats:
    """One randomized run with membership changes; raises InvariantViolation."""
    sim = ConfSimulation(ConfSimOptions(nodes=voters + spares, voters=voters, seed=seed, faults=tuple(faults),
                                        **overrides), trace=trace)
    sim.run(duration_ms)
    return sim.stats


def simulate_conf_report(voters: int, spares: int, seed: int, duration_ms: int, faults: tuple[str, ...],
                         trace: bool, echo: Callable[[str], None], *, as_json: bool = False) -> int:
    """`raftlog sim --spares N`: a run with membership changes, transfers and reads; print results; exit status.

    `as_json`: print only the run's JSON summary (simulation.run_summary, plus `voters`), on one line.
    """
    from raftlog.sim.simulation import INVARIANTS, check_faults, run_reported, run_summary
    check_faults(faults)
    opts = ConfSimOptions(nodes=voters + spares, voters=voters, seed=seed, faults=tuple(faults))
    sim = ConfSimulation(opts, trace=echo if trace else None)
    replay = (f"raftlog sim --nodes {voters} --spares {spares} --seed {seed} "
              f"--duration {duration_ms / 1000:g}s --faults {','.join(faults)} --trace")
    if as_json:
        broken = run_reported(sim, duration_ms, replay, lambda _line: None)
        echo(json.dumps({**run_summary(sim, duration_ms, broken, replay), "voters": voters}))
        return 1 if broken else 0
    echo(f"simulating {voters} voters + {spares} spare nodes, seed {seed}, {duration_ms / 1000:g}s of faults "
         f"[{','.join(faults) or 'none'}] with membership changes, transfers and reads, then heal")
    broken = run_reported(sim, duration_ms, replay, echo)
    s = sim.stats
    if not broken:
        for name in INVARIANTS + ("committed configurations form one chain (one change at a time)",
                                  "every node uses the configuration its log names",
                                  "every served read covers every earlier commit"):
            echo(f"ok    {name}")
        lid = sim.leader()
        final = sim.nodes[lid].raw.conf_state if lid else None
        echo(f"ok    the last change completed: {confchange.describe(final) if final else '-'}, leader {lid}")
    echo(f"simulated {sim.now / 1000:.3f}s: {s.elections} elections, {s.commits} entries committed, "
         f"{s.changes_proposed} changes proposed ({s.changes_refused} refused while one was in flight), "
         f"{s.changes_committed} configuration entries committed, leader removed {s.leader_removed} times, "
         f"{s.transfers} transfers asked, {s.reads_served} of {s.reads_issued} reads served "
         f"({s.lease_reads_served} by lease), {s.crashes} crashes, {s.partitions} partitions")
    return 1 if broken else 0
