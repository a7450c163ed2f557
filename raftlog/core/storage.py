"""The storage port: the Storage protocol the engine reads and the runtime writes, and MemoryStorage.

The engine owns this interface (as etcd/raft's storage.go does); implementations live above
it (raftlog.storage.lmdb) or beside it (MemoryStorage, for the engine's tests and the
simulator). Storage holds the durable part of a node: hard state, configuration, snapshot metadata and
the entry records `[first_index, last_index]`. Writes are atomic: one `save` call is all or
nothing. Ranges are half-open `[lo, hi)`.
"""
from __future__ import annotations

import zlib
from typing import Iterator, Optional, Protocol

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
        """Atomically: drop entries >= truncate_from (0 = none), store `records` from first_index,
        set hard and conf state.

        PRECONDITION: first_index == last_index + 1 after the truncation. Durable on return when sync.
        """

    def compact(self, snapshot: SnapshotMeta) -> None:
        """Drop entries <= snapshot.index and record the snapshot's position."""

    # -- snapshots (see raftlog/core/snapshot.py for the transfer) ----------------------------

    def save_snapshot(self, snapshot: SnapshotMeta, data: bytes) -> SnapshotMeta:
        """Make `data` the current snapshot at snapshot.index; the stored meta (size, crc32 filled in).

        The log is untouched; an older or equal index keeps the current snapshot.
        """

    def compact_log(self, index: int) -> None:
        """Drop entries <= index (at most the snapshot's index): what stays below it is a retained tail."""

    def snapshot_data(self) -> bytes:
        """The current snapshot's bytes (b"" when there is none)."""

    def snapshot_chunk(self, index: int, offset: int, size: int) -> bytes:
        """Bytes `[offset, offset + size)` of the snapshot at `index`; LookupError when no longer held."""

    def incoming_snapshot(self) -> Optional[tuple[SnapshotMeta, int, int]]:
        """The partial snapshot being received: `(meta, bytes held, their crc32)`, or None."""

    def write_snapshot_chunk(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        """Store one received chunk durably; offset 0 starts a new partial snapshot. IndexError on a gap."""

    def install_snapshot(self, meta: SnapshotMeta) -> None:
        """Replace the log by the received snapshot `meta`; CorruptLogError when incomplete or its crc32 fails."""

    # -- incarnations (see raftlog/core/incarnations.py) ---------------------------------

    def incarnations(self) -> dict[int, int]:
        """The saved peer id -> incarnation book (empty when new)."""

    def save_incarnations(self, known: dict[int, int]) -> None:
        """Replace the saved incarnation book by `known`; durable on return when sync."""

    def close(self) -> None:
        """Release resources; the storage is unusable afterwards."""


def read_in_chunks(storage: Storage, lo: int, hi: int, chunk_bytes: int = 4 << 20) -> Iterator[tuple[int, RecordBatch]]:
    """Entries `[lo, hi]` as `(first index, batch)` pairs of about `chunk_bytes` each (start-up scans)."""
    while lo <= hi:
        batch = storage.records(lo, hi + 1, chunk_bytes)
        yield lo, batch
        lo += len(batch)


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
    """Storage in process memory: the engine's tests and the simulator use it. Not durable.

    The log may start before the snapshot (a retained tail): `_log_start` is the
    compaction point `(index, term)`, at or below the snapshot's index. The current
    snapshot's bytes and the previous one's are kept, so a transfer in progress survives
    one newer snapshot.
    """

    def __init__(self, conf_state: Optional[ConfState] = None) -> None:
        self._hard_state = HardState()
        self._conf_state = conf_state
        self._snapshot = SnapshotMeta()
        self._log_start = (0, 0)            # (index, term) of the last compacted entry
        self._records: list[bytes] = []     # records of entries (log_start, last]
        self._snap_data: dict[int, bytes] = {}   # snapshot index -> bytes (current and previous)
        self._incoming: Optional[tuple[SnapshotMeta, bytearray]] = None
        self._incarnations: dict[int, int] = {}

    def hard_state(self) -> HardState:
        return self._hard_state

    def conf_state(self) -> Optional[ConfState]:
        return self._conf_state

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot

    def first_index(self) -> int:
        return self._log_start[0] + 1

    def last_index(self) -> int:
        return self._log_start[0] + len(self._records)

    def log_index(self) -> LogIndex:
        log = LogIndex(*self._log_start)
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
        check_save_range(self.last_index(), truncate_from, first_index, records, self._log_start[0])
        if truncate_from:
            del self._records[truncate_from - self.first_index():]
        if records is not None:
            self._records.extend(bytes(records.record(i)) for i in range(len(records)))
        if hard_state is not None:
            self._hard_state = hard_state
        if conf_state is not None:
            self._conf_state = conf_state

    def compact(self, snapshot: SnapshotMeta) -> None:
        """Record `snapshot` (position only) and drop the log up to its index."""
        if snapshot.index <= self._snapshot.index:
            return
        self._snapshot = snapshot
        if snapshot.index >= self.last_index():
            self._records = []
            self._log_start = (snapshot.index, snapshot.term)
        else:
            self.compact_log(snapshot.index)

    # -- snapshots: the bytes, a retained tail, InstallSnapshot on the receiving side ------

    def save_snapshot(self, snapshot: SnapshotMeta, data: bytes) -> SnapshotMeta:
        """Make `data` the current snapshot at snapshot.index (size and crc32 filled in); the log is untouched."""
        data = bytes(data)
        meta = SnapshotMeta(snapshot.index, snapshot.term, snapshot.conf_state, len(data), zlib.crc32(data))
        if meta.index <= self._snapshot.index:
            return self._snapshot
        self._snap_data = {i: d for i, d in self._snap_data.items() if i == self._snapshot.index}
        self._snap_data[meta.index] = data
        self._snapshot = meta
        return meta

    def compact_log(self, index: int) -> None:
        """Drop entries <= index (at most the snapshot's index); the log then starts at index + 1."""
        if index <= self._log_start[0]:
            return
        if index > self._snapshot.index or index > self.last_index():
            raise IndexError(f"cannot compact to {index}: snapshot {self._snapshot.index}, last {self.last_index()}")
        term = RecordBatch(self._records[index - self.first_index()]).term(0)
        del self._records[:index - self._log_start[0]]
        self._log_start = (index, term)

    def snapshot_data(self) -> bytes:
        """The current snapshot's bytes (b"" when there is none)."""
        return self._snap_data.get(self._snapshot.index, b"")

    def snapshot_chunk(self, index: int, offset: int, size: int) -> bytes:
        """Bytes `[offset, offset + size)` of the snapshot at `index`; LookupError when it is no longer held."""
        data = self._snap_data.get(index)
        if data is None:
            raise LookupError(f"snapshot {index} is not held")
        return data[offset:offset + size]

    def incoming_snapshot(self) -> Optional[tuple[SnapshotMeta, int, int]]:
        """The partial snapshot being received: `(meta, bytes held, their crc32)`, or None."""
        if self._incoming is None:
            return None
        meta, buf = self._incoming
        return meta, len(buf), zlib.crc32(buf)

    def write_snapshot_chunk(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        """Store one received chunk; offset 0 starts a new partial snapshot. IndexError on a gap."""
        if offset == 0:
            self._incoming = (meta, bytearray())
        if self._incoming is None or self._incoming[0] != meta or len(self._incoming[1]) != offset:
            raise IndexError(f"snapshot chunk at {offset} does not continue the partial snapshot")
        self._incoming[1].extend(data)

    def install_snapshot(self, meta: SnapshotMeta) -> None:
        """Replace the log by the received snapshot `meta` (complete and checked): the log restarts after it."""
        inc = self._incoming
        if inc is None or inc[0] != meta or len(inc[1]) != meta.size or zlib.crc32(inc[1]) != meta.crc32:
            raise CorruptLogError(meta.index, "received snapshot is incomplete or fails its crc32")
        self._snap_data = {meta.index: bytes(inc[1])}
        self._snapshot = meta
        self._incoming = None
        self._records = []
        self._log_start = (meta.index, meta.term)
        if meta.conf_state.voters:
            self._conf_state = meta.conf_state

    def incarnations(self) -> dict[int, int]:
        """The saved peer id -> incarnation book (empty when new)."""
        return dict(self._incarnations)

    def save_incarnations(self, known: dict[int, int]) -> None:
        """Replace the saved incarnation book by `known`."""
        self._incarnations = dict(known)

    def close(self) -> None:
        self._records = []
