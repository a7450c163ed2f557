"""The Storage protocol the engine and runtime use, and MemoryStorage, its in-memory implementation for tests.

Storage holds the durable part of a node: hard state, configuration, snapshot metadata and
the entry records `[first_index, last_index]`. Writes are atomic: one `save` call is all or
nothing. Ranges are half-open `[lo, hi)`.
"""
from __future__ import annotations

from typing import Optional, Protocol

from raftlog.core.messages import ConfState, HardState, SnapshotMeta
from raftlog.errors import CorruptLogError, FrameError
from raftlog.hot import LogIndex, RecordBatch


class Storage(Protocol):
    """What a node keeps across restarts. Implementations: MemoryStorage, LmdbStorage."""

    def hard_state(self) -> HardState:
        """The last saved hard state (all zero when new)."""

    def conf_state(self) -> Optional[ConfState]:
        """The last saved configuration, or None when none was saved."""

    def snapshot_meta(self) -> SnapshotMeta:
        """The last snapshot's position (index 0 when there is none)."""

    def first_index(self) -> int:
        """The first index held: snapshot index + 1."""

    def last_index(self) -> int:
        """The last index held (the snapshot index when no entry is held)."""

    def log_index(self) -> LogIndex:
        """A LogIndex of the stored entries' terms, offset by the snapshot."""

    def records(self, lo: int, hi: int, max_bytes: Optional[int] = None) -> RecordBatch:
        """Entries `[lo, hi)`, cut short to fit max_bytes (but at least one). CRC-checked: CorruptLogError(index).

        IndexError when the range is outside `[first_index, last_index + 1)`.
        """

    def save(self, *, hard_state: Optional[HardState] = None, truncate_from: int = 0,
             first_index: int = 0, records: Optional[RecordBatch] = None,
             conf_state: Optional[ConfState] = None) -> None:
        """Atomically: drop entries >= truncate_from (0 = none), store `records` from first_index, set hard and conf state.

        PRECONDITION: first_index == last_index + 1 after the truncation. Durable on return when sync.
        """

    def compact(self, snapshot: SnapshotMeta) -> None:
        """Drop entries <= snapshot.index and record the snapshot's position."""

    def close(self) -> None:
        """Release resources; the storage is unusable afterwards."""


def check_save_range(last_index: int, truncate_from: int, first_index: int,
                     records: Optional[RecordBatch], snapshot_index: int) -> int:
    """Validate a save's ranges; return the last index after it. Shared by every Storage."""
    if truncate_from:
        if not snapshot_index < truncate_from <= last_index + 1:
            raise IndexError(f"cannot truncate from {truncate_from}: log holds ({snapshot_index}, {last_index}]")
        last_index = truncate_from - 1
    if records is not None and len(records):
        if first_index != last_index + 1:
            raise IndexError(f"records start at {first_index}, log ends at {last_index}")
        last_index += len(records)
    return last_index


def verified(lo: int, buf: bytes) -> RecordBatch:
    """Parse stored records starting at index lo, turning a bad record into CorruptLogError(index)."""
    try:
        return RecordBatch(buf)
    except FrameError as exc:
        index = lo + exc.record if exc.record is not None else lo
        raise CorruptLogError(index, str(exc)) from None


class MemoryStorage:
    """Storage in process memory: the engine's tests and the simulator use it. Not durable."""

    def __init__(self, conf_state: Optional[ConfState] = None) -> None:
        self._hard_state = HardState()
        self._conf_state = conf_state
        self._snapshot = SnapshotMeta()
        self._records: list[bytes] = []     # records of entries (snapshot.index, last]

    def hard_state(self) -> HardState:
        return self._hard_state

    def conf_state(self) -> Optional[ConfState]:
        return self._conf_state

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot

    def first_index(self) -> int:
        return self._snapshot.index + 1

    def last_index(self) -> int:
        return self._snapshot.index + len(self._records)

    def log_index(self) -> LogIndex:
        log = LogIndex(self._snapshot.index, self._snapshot.term)
        if self._records:
            log.extend(verified(self.first_index(), b"".join(self._records)).terms())
        return log

    def records(self, lo: int, hi: int, max_bytes: Optional[int] = None) -> RecordBatch:
        first = self.first_index()
        if lo > hi or lo < first or hi > self.last_index() + 1:
            raise IndexError(f"range [{lo}, {hi}) outside [{first}, {self.last_index() + 1})")
        chosen = self._records[lo - first:hi - first]
        if max_bytes is not None:
            total = 0
            for n, record in enumerate(chosen):
                total += len(record)
                if total > max_bytes and n > 0:
                    chosen = chosen[:n]
                    break
        return verified(lo, b"".join(chosen))

    def save(self, *, hard_state: Optional[HardState] = None, truncate_from: int = 0,
             first_index: int = 0, records: Optional[RecordBatch] = None,
             conf_state: Optional[ConfState] = None) -> None:
        check_save_range(self.last_index(), truncate_from, first_index, records, self._snapshot.index)
        if truncate_from:
            del self._records[truncate_from - self.first_index():]
        if records is not None:
            self._records.extend(bytes(records.record(i)) for i in range(len(records)))
        if hard_state is not None:
            self._hard_state = hard_state
        if conf_state is not None:
            self._conf_state = conf_state

    def compact(self, snapshot: SnapshotMeta) -> None:
        if snapshot.index <= self._snapshot.index:
            return
        keep_from = snapshot.index - self._snapshot.index
        del self._records[:keep_from]
        self._snapshot = snapshot

    def close(self) -> None:
        self._records = []
