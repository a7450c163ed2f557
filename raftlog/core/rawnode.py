"""RawNode: the engine's face for a runtime: tick/step/propose in, Ready out, advance when done.

The runtime's loop, in this order (the ordering is the contract):

    rd = node.ready()
    send(rd.messages)                          # at once, even before the write
    storage.save(hard_state=rd.hard_state, truncate_from=rd.truncate_from,
                 first_index=rd.entries_index, records=rd.entries)   # one atomic write
    # ... once that write is durable:
    send(rd.persisted_messages)
    apply(rd.committed)
    node.advance(rd)

Between ready() and advance() the runtime may keep calling step(), tick() and propose();
at most one Ready is outstanding (has_ready() is False until it is advanced).
Meanwhile `take_messages()` hands out what may be sent at once (a leader's AppendEntries
for new proposals: replication overlaps the leader's own fsync) and `take_committed()`
the entries that became committed and are durable here (their clients are answered
without waiting for the outstanding write).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Union

from raftlog.core import confchange
from raftlog.core.config import Config
from raftlog.core.messages import ConfState, HardState, Message, SnapshotMeta
from raftlog.core.raft import Raft, Role
from raftlog.core.removal import knows_removed
from raftlog.core.storage import Storage
from raftlog.hot import KIND_DATA, RecordBatch

log = logging.getLogger("raftlog.core")

__all__ = ["RawNode", "Ready", "SoftState", "Role"]


class SoftState(NamedTuple):
    """Volatile state worth a log line when it changes: role, known leader (0 = none), term."""

    role: Role
    leader: int
    term: int


@dataclass(slots=True)
class Ready:
    """What the runtime must do next, and WHEN each part may be acted on.

    - `soft_state`: role/leader/term if they changed since the last Ready, else None. Log it
      any time (`node 3 became leader at term 7`).
    - `messages`: may be sent AT ONCE, before or during the write below (AppendEntries,
      heartbeats, vote requests: nothing in them claims local durability).
    - `hard_state` (persist if not None), `truncate_from` (0 = none), `entries_index` +
      `entries` (contiguous from entries_index): written in ONE atomic storage.save, in the
      order Readies were handed out.
    - `persisted_messages`: send only AFTER that write is durable (acknowledgements, votes,
      any reply carrying a term or log position this node must not forget).
    - `committed`: `(first_index, records)` runs, in order, each entry handed out exactly once;
      already durable locally and committed. Apply them after the write (they may be applied
      before persisted_messages are sent).
    - `read_states`: linearizable reads released since the last Ready (core/readonly.py):
      serve each once this node has applied up to its index.
    - `conf_state`: the configuration now in force (the latest in the log, committed or
      not), when it changed: saved in the SAME storage.save as the entries, so the stored
      configuration always matches the stored log.
    - `must_sync`: the write must be fsynced before persisted_messages go (term, vote or
      entries changed); False means only the commit index moved.
    - `snapshot_chunks`: `(meta, offset, data)` pieces of a snapshot being received, in order;
      store them durably (offset 0 starts a new partial snapshot) BEFORE the rest of the
      write and before persisted_messages go.
    - `snapshot`: a received snapshot to install (not None only once all its chunks were
      handed out and checked): replace the log by it (storage.install_snapshot) BEFORE
      writing this Ready's entries, and restore the state machine from it BEFORE applying
      `committed` (which continues at snapshot.index + 1).
    Then call advance(ready).
    """

    soft_state: Optional[SoftState] = None
    hard_state: Optional[HardState] = None
    truncate_from: int = 0
    entries_index: int = 0
    entries: Optional[RecordBatch] = None
    messages: list[Message] = field(default_factory=list)
    persisted_messages: list[Message] = field(default_factory=list)
    committed: list[tuple[int, RecordBatch]] = field(default_factory=list)
    conf_state: Optional[ConfState] = None
    read_states: list = field(default_factory=list)
    must_sync: bool = False
    snapshot_chunks: list = field(default_factory=list)
    snapshot: Optional[SnapshotMeta] = None
    # Bookkeeping for advance(): the last entry written (index, term) and the last entry handed to apply.
    entries_last: tuple[int, int] = (0, 0)
    applied_to: int = 0

    def is_empty(self) -> bool:
        """True when the Ready asks for nothing."""
        return (self.soft_state is None and self.hard_state is None and not self.truncate_from
                and self.entries is None and not self.messages and not self.persisted_messages
                and not self.committed and not self.snapshot_chunks and self.snapshot is None
                and not self.read_states)


class RawNode:
    """One Raft node as a pure state machine over a Storage (read at start and for old entries).

    PRECONDITION: storage reflects every Ready advanced so far and nothing else.
    """

    def __init__(self, config: Config, storage: Storage, rng: random.Random) -> None:
        self.raft = Raft(config, storage, rng)
        self.storage = storage
        applied = config.applied
        lg = self.raft.log
        if applied > lg.committed:
            # Only committed entries are ever applied, so `applied` is committed cluster-wide;
            # the stored commit index may lag it because a runtime applies entries before the
            # hard state that covers them is written (runtime/node.py persists it lazily).
            if applied > lg.last_index:
                raise ValueError(f"applied {applied} is beyond the last stored index {lg.last_index}")
            lg.commit_to(applied)
        applied = max(applied, self.raft.log.first_index - 1)
        self._applied = applied          # Invariant: applied <= next_apply - 1 <= commit
        self._next_apply = applied + 1   # the first committed entry not yet handed out
        self._prev_hs = storage.hard_state()
        self._prev_soft: Optional[SoftState] = None
        self._outstanding: Optional[Ready] = None
        # A node bootstrapped from Config.voters has no configuration in storage yet: the first
        # Ready carries it, so from then on the log's configuration, not the Config, rules a restart.
        self._prev_conf = self.raft.conf if storage.conf_state() is not None or not self.raft.conf.voters else None

    # -- properties ----------------------------------------------------------------------

    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def role(self) -> Role:
        return self.raft.role

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def leader_id(self) -> int:
        return self.raft.leader_id

    @property
    def commit_index(self) -> int:
        return self.raft.log.committed

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def last_index(self) -> int:
        return self.raft.log.last_index

    @property
    def stable_index(self) -> int:
        """The last index known durable locally."""
        return self.raft.log.stable

    def status(self) -> dict:
        """A JSON-ready snapshot: id, role, term, leader, commit, applied, last_index (+ progress on a leader)."""
        r = self.raft
        out = {"id": r.id, "role": str(r.role), "term": r.term, "leader": r.leader_id,
               "vote": r.vote, "commit": r.log.committed, "applied": self._applied,
               "last_index": r.log.last_index, "stable_index": r.log.stable,
               "voters": list(r.voters), "voters_outgoing": list(r.conf.voters_outgoing),
               "learners": list(r.conf.learners), "lead_transferee": r.lead_transferee}
        if r.role is Role.LEADER:
            out["progress"] = {str(p): pr.to_dict() for p, pr in r.progress.items()}
            out["uncommitted_bytes"] = r.uncommitted_bytes
        return out

    # -- inputs --------------------------------------------------------------------------

    def tick(self) -> None:
        """One tick of logical time (the runtime calls it every tick interval, default 10 ms)."""
        self.raft.tick()

    def step(self, msg: Message) -> None:
        """Feed one message received from a peer."""
        self.raft.step(msg)

    def campaign(self) -> None:
        """Start an election now (pre-vote first when configured)."""
        self.raft.hup()

    def propose(self, payloads: Union[list[bytes], RecordBatch]) -> tuple[int, int]:
        """Append data entries as the leader; return `(first_index, term)` of the new entries.

        Raises NotLeader(leader_id) on a non-leader and ProposalDropped when the uncommitted
        budget is exhausted or a leadership transfer is in progress. Records of a RecordBatch
        are restamped with the leader's term (clients send term 0).
        """
        r = self.raft
        if r.role is not Role.LEADER:
            from raftlog.errors import NotLeader
            raise NotLeader(r.leader_id)
        if isinstance(payloads, RecordBatch):
            if len(payloads) == 0:
                raise ValueError("empty proposal")
            batch = payloads.restamp(r.term)
        else:
            if not payloads:
                raise ValueError("empty proposal")
            batch = RecordBatch.encode(r.term, KIND_DATA, payloads)
        if confchange.scan(batch, 0):
            raise ValueError("configuration entries go through propose_conf_change")
        return r.propose(batch)

    def propose_conf_change(self, changes: list[dict]) -> tuple[int, int]:
        """Start a membership change (`confchange.change(...)` dicts); `(index, term)` of its entry.

        NotLeader on a non-leader; ProposalDropped while another change is in flight or a
        leadership transfer runs; ConfChangeError when the change does not fit. The change is
        done when the configuration has no outgoing voters and its entry is committed.
        """
        return self.raft.propose_conf_change(changes)

    def read_index(self, ctx: bytes, lease: bool = False) -> None:
        """Request a linearizable read tagged `ctx` (diss. 6.4): a later Ready's `read_states` holds
        `(index, ctx)`; serve the read once applied >= index. `lease`: the leader may answer from
        its lease without a heartbeat round. NotLeader when no leader is known; a read may be
        lost (a leader change): time out and retry.
        """
        self.raft.read_index(ctx, lease=lease)

    def transfer_leadership(self, to: int) -> None:
        """Hand leadership to voter `to` (TimeoutNow); NotLeader on a non-leader, ValueError on a non-voter."""
        self.raft.transfer_leadership(to)

    def report_unreachable(self, peer: int) -> None:
        """The transport lost its connection to `peer`: a leader falls back to probing it."""
        self.raft.report_unreachable(peer)

    @property
    def conf_state(self) -> ConfState:
        """The configuration in force (the latest in the log)."""
        return self.raft.conf

    @property
    def removed(self) -> bool:
        """True once this node knows a committed configuration left it out (core/removal.py has the rule)."""
        r = self.raft
        return knows_removed(r.id, r.conf, r.conf_index, r.log.committed, r.leader_commit)

    def conf_settled(self) -> bool:
        """True when no change is in flight: not joint and the last configuration entry is committed."""
        r = self.raft
        return not confchange.is_joint(r.conf) and r.pending_conf_index <= r.log.committed

    def members(self) -> list[dict]:
        """Every member: `{"id", "address", "voter", "match"}` (match known on the leader only, else None)."""
        r = self.raft
        conf = r.conf
        addrs = confchange.address_map(conf)
        out = []
        for nid in sorted(confchange.members(conf)):
            pr = r.progress.get(nid) if r.role is Role.LEADER else None
            match = pr.match if pr is not None else (r.log.stable if nid == r.id else None)
            out.append({"id": nid, "address": addrs.get(nid, ""), "voter": nid in r.all_voters,
                        "match": match})
        return out

    def compact(self, index: int) -> None:
        """Forget log entries up to `index` in memory: a snapshot at or after `index` is durable in storage.

        PRECONDITION: storage already records a snapshot whose index is >= `index` (a
        follower that needs compacted entries is sent that snapshot), and `index` <= the
        applied index. Call it BEFORE storage drops the entries, so the engine never reads
        what is gone. A retained tail is `compact(snapshot_index - tail)`.
        """
        if index > self._applied:
            raise ValueError(f"compact to {index} beyond the applied index {self._applied}")
        self.raft.log.compact_to(index)

    @property
    def first_index(self) -> int:
        """The first index still held in the log (compaction point + 1)."""
        return self.raft.log.first_index

    # -- Ready / advance -----------------------------------------------------------------

    def _soft(self) -> SoftState:
        r = self.raft
        return SoftState(r.role, r.leader_id, r.term)

    def has_ready(self, commit: bool = True) -> bool:
        """True when ready() would return something (and no Ready is outstanding).

        `commit=False`: a Ready that would only carry a moved commit index does not count.
        Such a Ready persists nothing that must be durable (Raft re-learns the commit index),
        so a runtime may leave it to the next Ready, which carries the hard state with its
        entries (runtime/node.py does, after its own writes).
        """
        if self._outstanding is not None:
            return False
        r = self.raft
        lg = r.log
        if r.msgs or r.msgs_after_persist or lg.has_unstable():
            return True
        if (r.pending_bcast or r.pending_bcast_commit) and len(r.progress) > 1:
            return True          # (alone, the leader has nobody to send them to)
        if r.snapshot_chunks or r.pending_install is not None:
            return True
        if self._next_apply <= min(lg.committed, lg.stable) or r.conf is not self._prev_conf \
                or r.read_states or r.pending_read_round:
            return True
        hs = self._prev_hs
        if hs.term != r.term or hs.vote != r.vote or (commit and hs.commit != lg.committed):
            return True
        return self._prev_soft != self._soft()

    def ready(self) -> Ready:
        """Collect everything to persist, send and apply now; see Ready for when to act on each part."""
        if self._outstanding is not None:
            raise RuntimeError("a Ready is outstanding: advance() it first")
        r = self.raft
        r.flush()
        lg = r.log
        rd = Ready()
        soft = self._soft()
        if soft != self._prev_soft:
            rd.soft_state = soft
            self._prev_soft = soft
        hs = HardState(r.term, r.vote, lg.committed)
        prev = self._prev_hs
        if hs != prev:
            rd.hard_state = hs
            rd.must_sync = hs.term != prev.term or hs.vote != prev.vote
            self._prev_hs = hs
        if r.snapshot_chunks:
            rd.snapshot_chunks = r.snapshot_chunks
            r.snapshot_chunks = []
            rd.must_sync = True
        if r.pending_install is not None:
            rd.snapshot = r.pending_install
            r.pending_install = None
            rd.must_sync = True
            # Entries up to the snapshot reach the state machine through restore, not apply.
            self._next_apply = max(self._next_apply, rd.snapshot.index + 1)
        if lg.has_unstable():
            truncate_from, first, entries, last_term = lg.take_unstable()
            rd.truncate_from = truncate_from
            if entries is not None:
                rd.entries_index = first
                rd.entries = entries
                rd.entries_last = (first + len(entries) - 1, last_term)
            rd.must_sync = True
        if r.read_states:
            rd.read_states = r.read_states
            r.read_states = []
        if r.conf is not self._prev_conf:
            rd.conf_state = r.conf
            self._prev_conf = r.conf
            rd.must_sync = True
        rd.messages = r.msgs
        r.msgs = []
        rd.persisted_messages = r.msgs_after_persist
        r.msgs_after_persist = []
        hi = min(lg.committed, lg.stable)
        if self._next_apply <= hi:
            rd.committed = lg.segments(self._next_apply, hi + 1, r.cfg.max_committed_bytes)
            last_first, last_batch = rd.committed[-1]
            rd.applied_to = last_first + len(last_batch) - 1
            self._next_apply = rd.applied_to + 1
        self._outstanding = rd
        return rd

    def take_messages(self) -> list[Message]:
        """While a Ready is outstanding: the messages that may go out AT ONCE (see Ready.messages).

        Sends what new proposals and commit changes call for (AppendEntries) without waiting
        for the outstanding write, so a leader replicates batch k+1 while it fsyncs batch k.
        Never returns a message that must wait for persistence.
        """
        r = self.raft
        r.flush()
        msgs = r.msgs
        if msgs:
            r.msgs = []
        return msgs

    def take_committed(self) -> list[tuple[int, RecordBatch]]:
        """Committed entries, already durable here, not yet handed out (while a Ready is outstanding,
        or between Readies).

        The caller applies them at once; they count as applied. Every entry is handed out
        exactly once, by this or by a Ready's `committed`, in index order.
        """
        lg = self.raft.log
        hi = min(lg.committed, lg.stable)
        if self._next_apply > hi or self.raft.pending_install is not None:
            return []       # (a received snapshot replaces the log: the next Ready installs it first)
        segs = lg.segments(self._next_apply, hi + 1, self.raft.cfg.max_committed_bytes)
        last_first, last_batch = segs[-1]
        self._next_apply = last_first + len(last_batch)
        self._applied = self._next_apply - 1
        return segs

    def advance(self, rd: Ready) -> None:
        """Everything `rd` asked to persist is durable now and its committed entries were applied."""
        if rd is not self._outstanding:
            raise RuntimeError("advance() of a Ready that is not the outstanding one")
        self._outstanding = None
        r = self.raft
        if rd.entries_last[0]:
            r.log.stable_to(*rd.entries_last)
        if rd.snapshot is not None:
            self._applied = max(self._applied, rd.snapshot.index)
        if rd.applied_to > self._applied:   # take_committed may have applied further meanwhile
            self._applied = rd.applied_to
        tv = (rd.hard_state.term, rd.hard_state.vote) if rd.hard_state is not None else None
        r.on_persisted(tv)
