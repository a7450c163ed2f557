"""Retention for a log without a state machine: which prefix to drop, and dropping it behind a small snapshot.

A node that serves the log itself (`raftlog node`, or `raftlog.open` without a state
machine) keeps everything unless given limits (`RetentionPolicy`): the newest `entries`
entries, the newest `bytes` bytes of records (payload plus the 17-byte record header), and
the entries younger than `age_ms` of LOG time. Any combination; the first limit reached
wins (the compaction point is the largest any limit asks for).

Log time is the leader's clock written into the log, as session expiry uses it (core/
sessions.py): while an age limit is set, the leader appends a time mark (a KIND_NOOP record
whose payload is `MARK_MAGIC | time_ms u64`) every `mark_interval_ms` (1/16 of the age,
between 100 ms and one hour), idle or not. Every member applies the same marks in the same
order, so every member computes the same age boundary: the last mark stamped at or before
(the newest mark's time - age). Entries up to that mark were appended no later than it.

Compaction keeps what Raft needs as a metadata-only snapshot, taken by the Snapshotter
(runtime/snapshots.py) at the applied index: its SnapshotMeta (last included index and term,
the configuration) and the session table (runtime/sessions.py's wrap_snapshot with an empty
image). A follower behind the retained prefix is sent it by InstallSnapshot and continues
with the log after it. To spare a snapshot per apply, the log is compacted once the prefix
to drop is at least 1/16 of what the log holds.
"""
from __future__ import annotations

import logging
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional, Union

from raftlog.core.storage import read_in_chunks
from raftlog.errors import NotLeader, ProposalDropped
from raftlog.hot import KIND_NOOP, RecordBatch
from raftlog.runtime.port import NodePort
from raftlog.runtime.proposals import Proposals
from raftlog.runtime.snapshots import Snapshotter
from raftlog.units import parse_duration_ms, parse_size

log = logging.getLogger("raftlog.retention")

MARK_MAGIC = b"RLTM"
_MARK = struct.Struct(">Q")
MIN_MARK_INTERVAL_MS = 100         # the node looks at the clock every 100 ms
MAX_MARK_INTERVAL_MS = 3_600_000
BYTE_CHECKPOINTS = 64          # byte positions remembered per `bytes` limit: its granularity is 1/64 of it
COMPACT_FRACTION = 16          # compact once the prefix to drop is 1/16 of the log held
@dataclass(frozen=True)
class RetentionPolicy:
    """How much of the log to keep; 0 = no limit of that kind. All zero (the default): keep everything."""

    entries: int = 0
    bytes: int = 0
    age_ms: int = 0

    def __post_init__(self) -> None:
        for name in ("entries", "bytes", "age_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"retention {name} must be 0 (no limit) or positive, not {getattr(self, name)}")

    @property
    def active(self) -> bool:
        """True when any limit is set."""
        return bool(self.entries or self.bytes or self.age_ms)

    @property
    def mark_interval_ms(self) -> int:
        """How often the leader writes a time mark while an age limit is set."""
        return min(max(self.age_ms // 16, MIN_MARK_INTERVAL_MS), MAX_MARK_INTERVAL_MS)

    def describe(self) -> str:
        """'entries 1000, bytes 2147483648, age 604800000 ms' (the limits set), or 'keep everything'."""
        parts = [f"{name} {value}" for name, value in (("entries", self.entries), ("bytes", self.bytes))
                 if value]
        if self.age_ms:
            parts.append(f"age {self.age_ms} ms")
        return ", ".join(parts) or "keep everything"


def encode_mark(time_ms: int) -> RecordBatch:
    """A time mark: one KIND_NOOP record carrying the leader's clock in milliseconds."""
    return RecordBatch.encode(0, KIND_NOOP, [MARK_MAGIC + _MARK.pack(time_ms)])


def decode_mark(payload: bytes) -> Optional[int]:
    """The time of a time mark's payload; None for any other NOOP payload (a new term's empty entry)."""
    raw = bytes(payload)
    if len(raw) != len(MARK_MAGIC) + _MARK.size or not raw.startswith(MARK_MAGIC):
        return None
    return _MARK.unpack_from(raw, len(MARK_MAGIC))[0]


class RetainedLog:
    """What the limits need to know of the applied log after the compaction point; deterministic, no I/O.

    Byte positions are remembered at batch ends (inside a batch larger than the granularity,
    about one per granularity), merged so that about 2 * BYTE_CHECKPOINTS cover a `bytes` limit: the
    bytes kept are never above the limit, and below it by at most about 2/BYTE_CHECKPOINTS of it.
    """

    def __init__(self, policy: RetentionPolicy, compacted: int) -> None:
        self.policy = policy
        self.compacted = compacted                       # the last index dropped (first index - 1)
        self.total_bytes = 0                             # record bytes applied (since this object began)
        self.base_bytes = 0                              # total_bytes at the compaction point (at most)
        self.checkpoints: deque[tuple[int, int]] = deque()   # (index, total_bytes after it), ascending
        self.marks: deque[tuple[int, int]] = deque()     # (index, time_ms) of time marks, ascending
        self.log_ms = 0                                  # the newest mark's time: the log's clock
        self._step = max(1, policy.bytes // BYTE_CHECKPOINTS)

    def add(self, first: int, batch: RecordBatch) -> None:
        """Applied entries `[first, first + len(batch))`, in index order."""
        n = len(batch)
        if not n:
            return
        last = first + n - 1
        if self.policy.bytes:
            if batch.nbytes > self._step and n > 1:
                # A batch larger than the granularity: positions inside it too, about `_step` apart.
                before = self.total_bytes
                done = 0
                target = self._step
                while done < n:
                    k = max(batch.prefix_count(target), done + 1)
                    nbytes = batch.slice(0, k).nbytes
                    self._checkpoint(first + k - 1, before + nbytes)
                    done = k
                    target = nbytes + self._step
            else:
                self._checkpoint(last, self.total_bytes + batch.nbytes)
        if self.policy.age_ms:
            i = batch.find_kind(KIND_NOOP, 0)
            while 0 <= i < n:
                t = decode_mark(batch.payload(i))
                if t is not None:
                    self.marks.append((first + i, t))
                    self.log_ms = max(self.log_ms, t)
                i = batch.find_kind(KIND_NOOP, i + 1)

    def _checkpoint(self, index: int, total: int) -> None:
        """Remember that `total` bytes were applied through `index` (merged with the last one when close)."""
        self.total_bytes = total
        cps = self.checkpoints
        if len(cps) >= 2 and total - cps[-2][1] <= self._step:
            cps[-1] = (index, total)
        else:
            cps.append((index, total))

    def compaction_point(self, applied: int) -> int:
        """The last index the limits let go (`compacted` when none asks for more); at most `applied`."""
        p = self.policy
        upto = self.compacted
        if p.entries:
            upto = max(upto, applied - p.entries)
        if p.bytes:
            # Keep (index, applied] for the first checkpoint `index` whose bytes after it fit.
            floor = self.total_bytes - p.bytes
            if floor > self.base_bytes:
                for index, total in self.checkpoints:
                    if total >= floor:
                        upto = max(upto, index)
                        break
        if p.age_ms and self.marks:
            cutoff = self.log_ms - p.age_ms
            for index, t in self.marks:
                if t > cutoff:
                    break
                upto = max(upto, index)
        return min(upto, applied)

    def dropped(self, upto: int) -> None:
        """Entries up to `upto` are gone (compacted, or replaced by an installed snapshot)."""
        if upto <= self.compacted:
            return
        self.compacted = upto
        while self.checkpoints and self.checkpoints[0][0] <= upto:
            self.base_bytes = self.checkpoints.popleft()[1]
        while self.marks and self.marks[0][0] <= upto:
            self.marks.popleft()


class Retention:
    """One node's retention: follows the applied log, writes time marks while leader, compacts behind a snapshot."""

    def __init__(self, port: NodePort, proposals: Proposals, snapshots: Snapshotter, policy: RetentionPolicy) -> None:
        self.port = port
        self.proposals = proposals
        self.snapshots = snapshots
        self.policy = policy
        self.log = RetainedLog(policy, 0)
        self._next_mark = 0.0           # when (time.monotonic) this leader writes its next time mark

    def rebuild(self) -> None:
        """Start-up: read the applied log after the compaction point once (its byte positions and time marks)."""
        port = self.port
        storage = port.storage
        lo = storage.first_index()
        hi = port.applied_index
        self.log = RetainedLog(self.policy, lo - 1)
        if self.policy.bytes or self.policy.age_ms:
            for first, batch in read_in_chunks(storage, lo, hi):
                self.log.add(first, batch)
        log.info("node %d retains %s of its log", port.node_id, self.policy.describe())

    def on_committed(self, first: int, batch: RecordBatch) -> None:
        """Committed entries, in index order."""
        self.log.add(first, batch)

    def on_snapshot_installed(self, index: int) -> None:
        """A snapshot from the leader replaced the log up to `index`."""
        self.log.dropped(index)

    def due(self) -> int:
        """The index to compact up to when the limits let enough go (1/16 of the log held), else 0."""
        port = self.port
        compacted = port.raw.first_index - 1
        self.log.dropped(compacted)
        applied = port.applied_index
        upto = self.log.compaction_point(applied)
        if upto <= compacted or (upto - compacted) * COMPACT_FRACTION < applied - compacted:
            return 0
        return upto

    def maybe_compact(self) -> None:
        """Compact (behind a metadata snapshot at the applied index) when due."""
        port = self.port
        upto = self.due()
        if not upto:
            return
        done = self.snapshots.take_now(compact_to=upto)
        if done is not None:
            # Entries applied while it ran may let more go, and no apply may come to say so.
            done.add_done_callback(lambda _: None if port.stopping else self.maybe_compact())

    def tick(self) -> None:
        """Called every 100 ms: a leader with an age limit writes a time mark when one is due."""
        if not self.policy.age_ms:
            return
        port = self.port
        if str(port.raw.role) != "leader":
            self._next_mark = 0.0
            return
        now = time.monotonic()
        if now < self._next_mark or not port.write_budget_left():
            return
        try:
            self.proposals.propose_now(encode_mark(int(time.time() * 1000)))
        except (NotLeader, ProposalDropped):
            return
        self._next_mark = now + self.policy.mark_interval_ms / 1000


def retention_policy(entries: int = 0, size: Union[int, str] = 0, age: Union[float, str] = 0) -> RetentionPolicy:
    """A policy from user input: `size` in bytes or as '2GiB', `age` in seconds or as '7d'; ValueError when bad."""
    size_bytes = parse_size(size) if isinstance(size, str) else int(size)
    age_ms = parse_duration_ms(age) if isinstance(age, str) else int(age * 1000)
    return RetentionPolicy(int(entries), size_bytes, age_ms)
