"""RaftLog: the node's view of its log: every entry's term, recent records in memory, what is not yet durable.

Three watermarks, all Raft indexes:
- `stable`: the last index known durable in storage AND equal to the in-memory log;
- `written`: the last index handed to storage (durable or in an outstanding Ready);
- `last_index`: the last index in memory.
Invariant: stable <= written <= last_index; committed <= last_index.

Records `[cache_first, last_index]` are held in memory as a list of RecordBatch segments
(the entry cache). Entries not yet written exist only there, so eviction (bounded by
`max_cache_bytes`) only drops segments at or below `stable`; older entries are read back
from storage. Every operation here works per batch or per message, never per entry in
Python: terms go through LogIndex and batches are sliced, not copied.
"""
from __future__ import annotations

import bisect
from typing import Optional

from raftlog.core.storage import Storage
from raftlog.errors import LogSafetyError
from raftlog.hot import LogIndex, RecordBatch

EMPTY_BATCH = RecordBatch(b"")



def records_of_kind(batch: Optional[RecordBatch], first_index: int, kind: int) -> list[tuple[int, bytes]]:
    """`(index, payload)` of every record of `kind` in `batch` (which starts at first_index).

    Runs on every appended batch: RecordBatch.find_kind is a C loop over the record headers
    (~1 ns per record), so only the matching records cost Python work.
    """
    if batch is None or not len(batch):
        return []
    out = []
    i = batch.find_kind(kind)
    while i >= 0:
        out.append((first_index + i, batch.payload(i)))
        i = batch.find_kind(kind, i + 1)
    return out

class RaftLog:
    """The in-memory log over a Storage; see the module docstring for the watermarks."""

    __slots__ = ("storage", "index", "committed", "stable", "written", "pending_truncate",
                 "_seg_first", "_segs", "_cache_first", "_cache_bytes", "max_cache_bytes")

    def __init__(self, storage: Storage, max_cache_bytes: int) -> None:
        self.storage = storage
        self.index: LogIndex = storage.log_index()
        last = self.index.last_index
        self.committed = 0
        self.stable = last
        self.written = last
        self.pending_truncate = 0          # smallest truncation not yet handed to storage (0 = none)
        self._seg_first: list[int] = []    # first index of each cached segment, ascending
        self._segs: list[RecordBatch] = []
        self._cache_first = last + 1
        self._cache_bytes = 0
        self.max_cache_bytes = max_cache_bytes

    # -- reading -------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        """Index of the last entry in memory."""
        return self.index.last_index

    @property
    def last_term(self) -> int:
        """Term of the last entry in memory."""
        return self.index.last_term

    @property
    def first_index(self) -> int:
        """The first index still held (after compaction)."""
        return self.index.first_index

    def term_at(self, i: int) -> int:
        """Term of entry i (the snapshot index answers the snapshot term)."""
        return self.index.term_at(i)

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """True when a log ending at (last_index, last_term) is at least as up to date as ours (Raft 5.4.1)."""
        my_term = self.index.last_term
        return last_term > my_term or (last_term == my_term and last_index >= self.index.last_index)

    def segments(self, lo: int, hi: int, max_bytes: int) -> list[tuple[int, RecordBatch]]:
        """Entries `[lo, hi)` as `(first_index, batch)` runs, cut to about max_bytes (at least one entry).

        PRECONDITION: first_index <= lo < hi <= last_index + 1.
        """
        out: list[tuple[int, RecordBatch]] = []
        if lo < self._cache_first:
            # Evicted: read back from storage (durable, since eviction stops at `stable`).
            batch = self.storage.records(lo, min(hi, self._cache_first), max_bytes)
            return [(lo, batch)]
        firsts = self._seg_first
        segs = self._segs
        k = bisect.bisect_right(firsts, lo) - 1
        budget = max_bytes
        pos = lo
        while pos < hi and k < len(segs):
            seg = segs[k]
            base = firsts[k]
            part = seg.slice(pos - base, min(len(seg), hi - base))
            if out and part.slice(0, 1).nbytes > budget:
                break
            fit = part.prefix_count(budget)
            if fit < len(part):
                out.append((pos, part.slice(0, fit)))
                break
            out.append((pos, part))
            budget -= part.nbytes
            pos += len(part)
            k += 1
            if budget <= 0:
                break
        return out

    def slice(self, lo: int, hi: int, max_bytes: int) -> RecordBatch:
        """Entries `[lo, hi)` as one batch (a slice when they sit in one segment, else one concat copy)."""
        runs = self.segments(lo, hi, max_bytes)
        if len(runs) == 1:
            return runs[0][1]
        return RecordBatch.concat([b for _, b in runs])

    def has_unstable(self) -> bool:
        """True when entries or a truncation are waiting to be handed to storage."""
        return self.written < self.index.last_index or self.pending_truncate != 0

    # -- writing -------------------------------------------------------------------------

    def append(self, first_index: int, batch: RecordBatch, term: int = 0) -> None:
        """Append `batch` at first_index. `term` != 0 says every record has that term (a leader's proposal).

        PRECONDITION: first_index == last_index + 1; terms do not decrease.
        """
        n = len(batch)
        if n == 0:
            return
        if first_index != self.index.last_index + 1:
            raise LogSafetyError(f"append at {first_index} after last index {self.index.last_index}")
        if term:
            self.index.append(term, n)
        else:
            self.index.extend(batch.terms())
        self._seg_first.append(first_index)
        self._segs.append(batch)
        self._cache_bytes += batch.nbytes
        if self._cache_bytes > self.max_cache_bytes:
            self._evict()

    def truncate(self, index: int) -> None:
        """Drop entries `[index, last_index]` (a follower's conflicting suffix).

        Raises LogSafetyError at or below the commit index: committed entries are never removed.
        """
        if index <= self.committed:
            raise LogSafetyError(f"truncate from {index} at or below commit {self.committed}")
        self.index.truncate_from(index)
        if index < self._cache_first:
            self._seg_first.clear()
            self._segs.clear()
            self._cache_bytes = 0
            self._cache_first = index
        else:
            k = bisect.bisect_right(self._seg_first, index) - 1
            if k >= 0:
                seg = self._segs[k]
                keep = index - self._seg_first[k]
                dropped = self._segs[k + 1:]
                self._cache_bytes -= sum(b.nbytes for b in dropped)
                del self._segs[k + 1:]
                del self._seg_first[k + 1:]
                if keep == 0:
                    self._cache_bytes -= seg.nbytes
                    del self._segs[k]
                    del self._seg_first[k]
                elif keep < len(seg):
                    kept = seg.slice(0, keep)
                    self._cache_bytes -= seg.nbytes - kept.nbytes
                    self._segs[k] = kept
        if index <= self.written:
            # Storage holds (or will hold) entries from here: the next Ready must cut them.
            self.pending_truncate = index if not self.pending_truncate else min(self.pending_truncate, index)
            self.written = index - 1
        if self.stable >= index:
            self.stable = index - 1

    def commit_to(self, index: int) -> bool:
        """Move the commit index forward to `index`; False when it is not ahead. Never moves back."""
        if index <= self.committed:
            return False
        if index > self.index.last_index:
            raise LogSafetyError(f"commit {index} beyond last index {self.index.last_index}")
        self.committed = index
        return True

    def take_unstable(self) -> tuple[int, int, Optional[RecordBatch], int]:
        """Hand the not-yet-written suffix to storage: `(truncate_from, entries_index, entries, last_term)`.

        Marks it written; `stable_to` later confirms it durable.
        """
        truncate_from = self.pending_truncate
        lo = self.written + 1
        last = self.index.last_index
        entries = None
        if lo <= last:
            entries = self.slice(lo, last + 1, 1 << 62)
        self.pending_truncate = 0
        self.written = last
        return truncate_from, lo, entries, self.index.last_term if entries is not None else 0

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to `index` (of `term` there) are durable now; ignored when since truncated away."""
        if self.stable < index <= self.index.last_index and self.index.term_at(index) == term:
            self.stable = index
            if self._cache_bytes > self.max_cache_bytes:
                self._evict()

    def compact_to(self, index: int) -> None:
        """Forget entries `[first_index, index]` (they are in a snapshot); later reads start at index + 1.

        PRECONDITION: index <= committed and index <= stable (only applied, durable entries
        are compacted); an index at or below the current compaction point does nothing.
        """
        if index <= self.index.snapshot_index:
            return
        if index > self.committed or index > self.stable:
            raise LogSafetyError(f"compact to {index} beyond commit {self.committed} / stable {self.stable}")
        self.index.compact_to(index)
        firsts = self._seg_first
        segs = self._segs
        k = 0
        while k < len(segs) and firsts[k] + len(segs[k]) - 1 <= index:
            self._cache_bytes -= segs[k].nbytes
            k += 1
        del segs[:k]
        del firsts[:k]
        if segs and firsts[0] <= index:
            cut = index + 1 - firsts[0]
            kept = segs[0].slice(cut, len(segs[0]))
            self._cache_bytes -= segs[0].nbytes - kept.nbytes
            segs[0] = kept
            firsts[0] = index + 1
        self._cache_first = max(self._cache_first, index + 1)

    def restore(self, index: int, term: int) -> None:
        """Replace the whole log by a snapshot at (index, term): empty, committed and durable up to index.

        Used when a follower installs a snapshot its log does not contain (figure 13 step 7:
        discard the entire log). The storage write that makes this durable is the Ready's
        `snapshot`; nothing before index is ever read again.
        """
        if index < self.committed:
            raise LogSafetyError(f"restore to {index} below commit {self.committed}")
        self.index.reset(index, term)
        self._seg_first.clear()
        self._segs.clear()
        self._cache_bytes = 0
        self._cache_first = index + 1
        self.pending_truncate = 0
        self.committed = index
        self.stable = index
        self.written = index

    def match_term(self, index: int, term: int) -> bool:
        """True when the log holds entry `index` with `term` (the compaction point counts)."""
        return self.index.snapshot_index <= index <= self.index.last_index and self.index.term_at(index) == term

    def _evict(self) -> None:
        """Drop the oldest cached segments that are durable, until under budget."""
        k = 0
        freed = 0
        segs = self._segs
        firsts = self._seg_first
        over = self._cache_bytes - self.max_cache_bytes
        while k < len(segs) - 1 and freed < over and firsts[k] + len(segs[k]) - 1 <= self.stable:
            freed += segs[k].nbytes
            k += 1
        if k:
            self._cache_first = firsts[k]
            del segs[:k]
            del firsts[:k]
            self._cache_bytes -= freed
