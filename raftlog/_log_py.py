"""Pure-Python twin of src_pyx/_log.pyx: the in-memory log index, AppendEntries matching, quorum rule.

This is the reference implementation: the Cython module must behave identically, errors
included. Indexes are Raft indexes (the first entry is 1); terms are non-decreasing.
"""
from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from typing import Sequence

from raftlog.errors import LogSafetyError

__all__ = ["LogIndex", "match_append", "quorum_commit", "joint_quorum_commit"]


class LogIndex:
    """The terms of a log's entries `(snapshot_index, last_index]`, offset after compaction.

    Run-length encoded: `_firsts[k]` is the first index of run k and `_run_terms[k]` its
    term, strictly increasing from run to run; run k ends where run k + 1 starts (the last
    one at last_index). Memory is O(number of terms), so a log that is never compacted
    does not grow the process by a word per entry.

    Invariant: terms are non-decreasing and never below `snapshot_term`.
    """

    __slots__ = ("_firsts", "_run_terms", "_len", "_snapshot_index", "_snapshot_term")

    def __init__(self, snapshot_index: int = 0, snapshot_term: int = 0) -> None:
        self._firsts: list[int] = []
        self._run_terms: list[int] = []
        self._len = 0
        self.reset(snapshot_index, snapshot_term)

    def _push(self, term: int, count: int) -> None:
        """Append `count` entries of `term` (PRECONDITION: term >= last_term)."""
        if count <= 0:
            return
        if self._run_terms and self._run_terms[-1] == term:
            self._len += count
            return
        self._firsts.append(self._snapshot_index + self._len + 1)
        self._run_terms.append(term)
        self._len += count

    def _run_of(self, index: int) -> int:
        """The run holding `index`. PRECONDITION: snapshot_index < index <= last_index."""
        return bisect_right(self._firsts, index) - 1

    @property
    def snapshot_index(self) -> int:
        """Index of the last compacted entry (0 when nothing is compacted)."""
        return self._snapshot_index

    @property
    def snapshot_term(self) -> int:
        """Term of the last compacted entry."""
        return self._snapshot_term

    @property
    def first_index(self) -> int:
        """Index of the first entry held (snapshot_index + 1, even when the log is empty)."""
        return self._snapshot_index + 1

    @property
    def last_index(self) -> int:
        """Index of the last entry (snapshot_index when empty)."""
        return self._snapshot_index + self._len

    @property
    def last_term(self) -> int:
        """Term of the last entry (snapshot_term when empty)."""
        return self._run_terms[-1] if self._len else self._snapshot_term

    def __len__(self) -> int:
        return self._len

    def term_at(self, index: int) -> int:
        """Term of entry `index`; snapshot_index answers snapshot_term. IndexError outside."""
        offset = index - self._snapshot_index
        if offset == 0:
            return self._snapshot_term
        if offset < 0 or offset > self._len:
            raise IndexError(f"index {index} outside [{self._snapshot_index}, {self.last_index}]")
        return self._run_terms[self._run_of(index)]

    def append(self, term: int, count: int = 1) -> None:
        """Append `count` entries of `term`. ValueError if term < last_term or count < 0."""
        if count < 0:
            raise ValueError("count must be >= 0")
        if term < self.last_term:
            raise ValueError(f"term {term} below last term {self.last_term}")
        if not 0 <= term < 1 << 64:
            raise OverflowError(f"term {term} out of range")
        self._push(term, count)

    def extend(self, terms: Sequence[int]) -> None:
        """Append one entry per term in `terms` (e.g. array('Q')). ValueError if not non-decreasing.

        Any iterable works (it is read once); a term outside uint64 raises OverflowError.
        """
        if not (isinstance(terms, array) and terms.typecode == "Q"):
            terms = array("Q", terms)
        prev = self.last_term
        for term in terms:
            if term < prev:
                raise ValueError(f"term {term} below last term {prev}")
            prev = term
        push = self._push
        run_term = None
        count = 0
        for term in terms:
            if term == run_term:
                count += 1
                continue
            if count:
                push(run_term, count)
            run_term, count = term, 1
        if count:
            push(run_term, count)

    def truncate_from(self, index: int) -> None:
        """Drop entries `[index, last_index]`. IndexError unless first_index <= index <= last_index + 1."""
        offset = index - self._snapshot_index
        if offset < 1 or offset > self._len + 1:
            raise IndexError(f"cannot truncate from {index}: log holds [{self.first_index}, {self.last_index}]")
        self._len = offset - 1
        k = bisect_left(self._firsts, index)
        del self._firsts[k:]
        del self._run_terms[k:]

    def compact_to(self, index: int) -> None:
        """Drop entries `[first_index, index]`, remembering index's term.

        IndexError unless snapshot_index <= index <= last_index.
        """
        offset = index - self._snapshot_index
        if offset < 0 or offset > self._len:
            raise IndexError(f"cannot compact to {index}: log holds [{self.first_index}, {self.last_index}]")
        if offset:
            self._snapshot_term = self.term_at(index)
            if offset == self._len:
                self._firsts.clear()
                self._run_terms.clear()
            else:
                k = self._run_of(index + 1)
                del self._firsts[:k]
                del self._run_terms[:k]
                self._firsts[0] = index + 1
            self._len -= offset
            self._snapshot_index = index

    def reset(self, snapshot_index: int, snapshot_term: int) -> None:
        """Empty the log and restart it after a snapshot at (snapshot_index, snapshot_term)."""
        if snapshot_index < 0 or snapshot_term < 0:
            raise ValueError("snapshot index and term must be >= 0")
        if snapshot_index >= 1 << 63 or snapshot_term >= 1 << 64:
            raise OverflowError("snapshot index must fit int64 and term uint64")
        self._firsts.clear()
        self._run_terms.clear()
        self._len = 0
        self._snapshot_index = snapshot_index
        self._snapshot_term = snapshot_term

    def terms(self, lo: int, hi: int) -> array:
        """The terms of entries `[lo, hi)` as array('Q'). IndexError outside [first_index, last_index + 1]."""
        if lo > hi or lo < self.first_index or hi > self.last_index + 1:
            raise IndexError(f"range [{lo}, {hi}) outside [{self.first_index}, {self.last_index + 1})")
        out = array("Q")
        if lo == hi:
            return out
        firsts = self._firsts
        k = self._run_of(lo)
        pos = lo
        while pos < hi:
            end = min(firsts[k + 1] if k + 1 < len(firsts) else hi, hi)
            out.extend(array("Q", [self._run_terms[k]]) * (end - pos))
            pos = end
            k += 1
        return out

    def first_index_of_term(self, index: int) -> int:
        """The first index in the log holding the same term as `index` (never below first_index).

        The conflict hint a follower returns (Raft dissertation 5.3, "fast backtracking").
        """
        self.term_at(index)
        if index == self._snapshot_index:
            return index
        return self._firsts[self._run_of(index)]

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest j <= min(index, last_index) with term_at(j) <= term, or snapshot_index.

        The leader uses it on a rejection hint to skip a whole term per round (etcd's findConflictByTerm).
        """
        j = min(index, self.last_index)
        if j <= self._snapshot_index:
            return self._snapshot_index if j < self._snapshot_index else j
        k = self._run_of(j)
        if self._run_terms[k] <= term:
            return j
        while k >= 0 and self._run_terms[k] > term:
            k -= 1
        if k < 0:
            return self._snapshot_index
        return self._firsts[k + 1] - 1


def match_append(log: LogIndex, prev_index: int, prev_term: int, terms: Sequence[int],
                 commit_index: int) -> tuple[bool, int, int]:
    """Follower side of AppendEntries log matching (Raft figure 2, receiver rules 2-4). Does not modify `log`.

    Returns `(False, conflict_index, conflict_term)` to reject: conflict_term 0 means the log
    is too short and conflict_index is last_index + 1; otherwise conflict_index is the first
    index of conflict_term in this log. Returns `(True, truncate_from, skip)` to accept:
    truncate from `truncate_from` (0 = nothing), then append `terms[skip:]`. Entries at or
    below snapshot_index are committed and count as matching. A stale or duplicate
    request never truncates a matching entry. Raises LogSafetyError rather than truncate
    at or below `commit_index`.
    """
    last = log.last_index
    n = len(terms)
    if prev_index > last:
        return (False, last + 1, 0)
    snapshot_index = log.snapshot_index
    start = 0
    if prev_index < snapshot_index:
        start = snapshot_index - prev_index
        if start >= n:
            return (True, 0, n)
    else:
        local = log.term_at(prev_index)
        if local != prev_term:
            return (False, log.first_index_of_term(prev_index), local)
    for k in range(start, n):
        index = prev_index + 1 + k
        if index > last:
            return (True, 0, k)
        if log.term_at(index) != terms[k]:
            if index <= commit_index:
                raise LogSafetyError(f"AppendEntries would truncate committed entry {index} (commit {commit_index})")
            return (True, index, k)
    return (True, 0, n)


def quorum_commit(matches: Sequence[int]) -> int:
    """The largest index replicated on a majority of `matches` (one match index per voter).

    ValueError on an empty configuration. The caller applies the current-term rule (Raft figure 8).
    """
    n = len(matches)
    if n == 0:
        raise ValueError("quorum of an empty configuration")
    return sorted(matches, reverse=True)[n // 2]


def joint_quorum_commit(incoming: Sequence[int], outgoing: Sequence[int]) -> int:
    """The commit index under joint consensus: a majority of both configurations (dissertation 4.3).

    An empty `outgoing` means no joint configuration: the result is quorum_commit(incoming).
    """
    if len(outgoing) == 0:
        return quorum_commit(incoming)
    return min(quorum_commit(incoming), quorum_commit(outgoing))
