# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython port of raftlog/_log_py.py: the in-memory log index, AppendEntries matching, quorum rule.

raftlog/_log_py.py is the reference and the documentation: every name here behaves like its
twin, errors included. Indexes are int64, terms uint64; an index argument of any size is
accepted (clamped before range checks, so a huge one is simply out of range).
"""
from array import array

from cpython cimport array as carray
from cpython.buffer cimport (PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release, PyObject_CheckBuffer,
                             PyObject_GetBuffer)
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memcpy, memmove

from raftlog.errors import LogSafetyError

__all__ = ["LogIndex", "match_append", "quorum_commit", "joint_quorum_commit"]

cdef object _operator_index
from operator import index as _operator_index

cdef carray.array _TERMS_TEMPLATE = array("Q")


cdef inline int64_t _i64(object v) except? -1:
    """v as int64, clamped to [INT64_MIN, INT64_MAX] (range checks then reject it)."""
    cdef int overflow = 0
    cdef long long x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow > 0:
        return INT64_MAX
    if overflow < 0:
        return INT64_MIN
    return x


cdef inline bint _u64(object v, uint64_t* out) except -1:
    """Store v in *out and return True, or return False when v is outside uint64."""
    v = _operator_index(v)
    if v < 0 or v > 0xFFFFFFFFFFFFFFFF:
        return False
    out[0] = PyLong_AsUnsignedLongLong(v)
    return True


cdef inline bint _u64_buffer(object obj, Py_buffer* view) except -1:
    """Acquire obj's buffer into *view if it is a contiguous 1-d array of uint64; else return False."""
    if PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0:
        return False
    cdef bytes fmt = view.format if view.format != NULL else b"B"
    if view.ndim == 1 and view.itemsize == 8 and fmt in (b"Q", b"@Q", b"=Q", b"L", b"@L"):
        return True
    PyBuffer_Release(view)
    return False


cdef inline bint _try_u64_buffer(object obj, Py_buffer* view):
    """_u64_buffer without the exception: objects without a buffer just answer False."""
    if not PyObject_CheckBuffer(obj):
        return False
    try:
        return _u64_buffer(obj, view)
    except (TypeError, BufferError, ValueError):
        return False


cdef class LogIndex:
    """The terms of a log's entries `(snapshot_index, last_index]`, run-length encoded (see _log_py.LogIndex).

    Storage: one run per term, `_rf[k]` the first index of run k and `_rt[k]` its term,
    terms strictly increasing from run to run; run k ends where run k + 1 starts (the last
    one at last_index). Memory is O(number of terms), not O(entries): an array of one
    uint64 per entry grew a busy node's RSS by 8 bytes per entry, 2.4 MB/s at 300K
    entries/s in `raftlog bench`, without end (the log is never compacted there). A lookup
    is a binary search over the runs, with the last run (where nearly every lookup lands)
    checked first.
    """

    cdef int64_t* _rf
    cdef uint64_t* _rt
    cdef Py_ssize_t _nr          # runs in use; 0 exactly when _len == 0
    cdef Py_ssize_t _rcap
    cdef Py_ssize_t _len         # entries
    cdef int64_t _snapshot_index
    cdef uint64_t _snapshot_term

    def __cinit__(self, *args, **kwargs):
        self._rf = NULL
        self._rt = NULL
        self._nr = 0
        self._rcap = 0
        self._len = 0

    def __dealloc__(self):
        PyMem_Free(self._rf)
        PyMem_Free(self._rt)

    def __init__(self, snapshot_index=0, snapshot_term=0):
        self.reset(snapshot_index, snapshot_term)

    cdef int _push(self, uint64_t term, Py_ssize_t n) except -1:
        """Append n entries of `term` (PRECONDITION: term >= last term)."""
        cdef Py_ssize_t cap
        cdef int64_t* rf
        cdef uint64_t* rt
        if n <= 0:
            return 0
        if self._nr and self._rt[self._nr - 1] == term:
            self._len += n
            return 0
        if self._nr == self._rcap:
            cap = max(8, self._rcap * 2)
            rf = <int64_t*>PyMem_Realloc(self._rf, cap * sizeof(int64_t))
            if rf == NULL:
                raise MemoryError()
            self._rf = rf
            rt = <uint64_t*>PyMem_Realloc(self._rt, cap * sizeof(uint64_t))
            if rt == NULL:
                raise MemoryError()
            self._rt = rt
            self._rcap = cap
        self._rf[self._nr] = self._snapshot_index + self._len + 1
        self._rt[self._nr] = term
        self._nr += 1
        self._len += n
        return 0

    cdef inline Py_ssize_t _run_of(self, int64_t index) noexcept:
        """The run holding `index`. PRECONDITION: snapshot_index < index <= last_index."""
        cdef Py_ssize_t lo = 0
        cdef Py_ssize_t hi = self._nr - 1
        cdef Py_ssize_t mid
        if self._rf[hi] <= index:
            return hi
        while lo < hi:            # invariant: _rf[lo] <= index < _rf[hi]
            mid = (lo + hi + 1) // 2
            if self._rf[mid] <= index:
                lo = mid
            else:
                hi = mid - 1
        return lo

    cdef inline uint64_t _term(self, int64_t index) noexcept:
        """PRECONDITION: snapshot_index < index <= last_index."""
        return self._rt[self._run_of(index)]

    @property
    def snapshot_index(self):
        """Index of the last compacted entry (0 when nothing is compacted)."""
        return self._snapshot_index

    @property
    def snapshot_term(self):
        """Term of the last compacted entry."""
        return self._snapshot_term

    @property
    def first_index(self):
        """Index of the first entry held (snapshot_index + 1, even when the log is empty)."""
        return self._snapshot_index + 1

    @property
    def last_index(self):
        """Index of the last entry (snapshot_index when empty)."""
        return self._snapshot_index + self._len

    @property
    def last_term(self):
        """Term of the last entry (snapshot_term when empty)."""
        return self._last_term()

    cdef inline uint64_t _last_term(self) noexcept:
        return self._rt[self._nr - 1] if self._len else self._snapshot_term

    def __len__(self):
        return self._len

    def term_at(self, index):
        """Term of entry `index`; snapshot_index answers snapshot_term. IndexError outside."""
        cdef int64_t i = _i64(index)
        if i == self._snapshot_index:
            return self._snapshot_term
        if i < self._snapshot_index or i > self._snapshot_index + self._len:
            raise IndexError(f"index {index} outside [{self._snapshot_index}, {self._snapshot_index + self._len}]")
        return self._term(i)

    def append(self, term, count=1):
        """Append `count` entries of `term`. ValueError if term < last_term or count < 0."""
        if count < 0:
            raise ValueError("count must be >= 0")
        if term < self._last_term():
            raise ValueError(f"term {term} below last term {self._last_term()}")
        cdef uint64_t t = term
        cdef Py_ssize_t n = count
        self._push(t, n)

    def extend(self, terms):
        """Append one entry per term in `terms` (e.g. array('Q')). ValueError if not non-decreasing.

        Any iterable works (it is read once); a term outside uint64 raises OverflowError.
        """
        cdef Py_buffer view
        if not _try_u64_buffer(terms, &view):
            terms = array("Q", terms)
            _u64_buffer(terms, &view)
        try:
            self._extend(<const uint64_t*>view.buf, view.shape[0])
        finally:
            PyBuffer_Release(&view)

    cdef int _extend(self, const uint64_t* src, Py_ssize_t n) except -1:
        cdef uint64_t prev = self._last_term()
        cdef Py_ssize_t k, j
        for k in range(n):
            if src[k] < prev:
                raise ValueError(f"term {src[k]} below last term {prev}")
            prev = src[k]
        k = 0
        while k < n:              # one _push per run of equal terms
            j = k + 1
            while j < n and src[j] == src[k]:
                j += 1
            self._push(src[k], j - k)
            k = j
        return 0

    def truncate_from(self, index):
        """Drop entries `[index, last_index]`. IndexError unless first_index <= index <= last_index + 1."""
        cdef int64_t i = _i64(index)
        if i <= self._snapshot_index or i > self._snapshot_index + self._len + 1:
            raise IndexError(f"cannot truncate from {index}: log holds "
                             f"[{self._snapshot_index + 1}, {self._snapshot_index + self._len}]")
        self._len = i - self._snapshot_index - 1
        while self._nr and self._rf[self._nr - 1] >= i:
            self._nr -= 1

    def compact_to(self, index):
        """Drop entries `[first_index, index]`, remembering index's term. IndexError unless snapshot_index <= index <= last_index."""
        cdef int64_t i = _i64(index)
        if i < self._snapshot_index or i > self._snapshot_index + self._len:
            raise IndexError(f"cannot compact to {index}: log holds "
                             f"[{self._snapshot_index + 1}, {self._snapshot_index + self._len}]")
        cdef Py_ssize_t offset = i - self._snapshot_index
        cdef Py_ssize_t k
        if offset:
            self._snapshot_term = self._term(i)
            if i == self._snapshot_index + self._len:
                self._nr = 0
            else:
                k = self._run_of(i + 1)
                if k:
                    memmove(self._rf, self._rf + k, (self._nr - k) * sizeof(int64_t))
                    memmove(self._rt, self._rt + k, (self._nr - k) * sizeof(uint64_t))
                    self._nr -= k
                self._rf[0] = i + 1
            self._len -= offset
            self._snapshot_index = i

    def reset(self, snapshot_index, snapshot_term):
        """Empty the log and restart it after a snapshot at (snapshot_index, snapshot_term)."""
        if snapshot_index < 0 or snapshot_term < 0:
            raise ValueError("snapshot index and term must be >= 0")
        if snapshot_index >= 1 << 63 or snapshot_term >= 1 << 64:
            raise OverflowError("snapshot index must fit int64 and term uint64")
        cdef int64_t i = snapshot_index
        cdef uint64_t t = snapshot_term
        self._snapshot_index = i
        self._snapshot_term = t
        self._nr = 0
        self._len = 0

    def terms(self, lo, hi):
        """The terms of entries `[lo, hi)` as array('Q'). IndexError outside [first_index, last_index + 1]."""
        cdef int64_t a = _i64(lo)
        cdef int64_t b = _i64(hi)
        if a > b or a <= self._snapshot_index or b > self._snapshot_index + self._len + 1:
            raise IndexError(f"range [{lo}, {hi}) outside "
                             f"[{self._snapshot_index + 1}, {self._snapshot_index + self._len + 1})")
        cdef carray.array out = carray.clone(_TERMS_TEMPLATE, b - a, False)
        cdef uint64_t* dst = <uint64_t*>out.data.as_voidptr
        cdef Py_ssize_t k
        cdef int64_t idx = a
        cdef int64_t end
        if b > a:
            k = self._run_of(a)
            while idx < b:
                end = self._rf[k + 1] if k + 1 < self._nr else b
                if end > b:
                    end = b
                while idx < end:
                    dst[idx - a] = self._rt[k]
                    idx += 1
                k += 1
        return out

    def first_index_of_term(self, index):
        """The first index in the log holding the same term as `index` (never below first_index)."""
        term = self.term_at(index)
        cdef int64_t i = _i64(index)
        if i == self._snapshot_index:
            return i
        return self._first_of_term(i)

    cdef int64_t _first_of_term(self, int64_t index) noexcept:
        """PRECONDITION: snapshot_index < index <= last_index."""
        return self._rf[self._run_of(index)]

    def find_conflict_by_term(self, index, term):
        """The largest j <= min(index, last_index) with term_at(j) <= term, or snapshot_index."""
        cdef int64_t j = min(_i64(index), self._snapshot_index + self._len)
        if j < self._snapshot_index or term < 0:
            return self._snapshot_index
        if j == self._snapshot_index:
            return j
        cdef uint64_t t = term if term <= 0xFFFFFFFFFFFFFFFF else 0xFFFFFFFFFFFFFFFF
        cdef Py_ssize_t k = self._run_of(j)
        if self._rt[k] <= t:
            return j
        while k >= 0 and self._rt[k] > t:
            k -= 1
        if k < 0:
            return self._snapshot_index
        return self._rf[k + 1] - 1


def match_append(LogIndex log not None, prev_index, prev_term, terms, commit_index):
    """Follower side of AppendEntries log matching (Raft figure 2, receiver rules 2-4); see _log_py.match_append.

    Returns `(False, conflict_index, conflict_term)` or `(True, truncate_from, skip)`; raises
    LogSafetyError rather than truncate at or below `commit_index`. Does not modify `log`.
    """
    cdef Py_ssize_t n = len(terms)
    cdef int64_t last = log._snapshot_index + log._len
    cdef int64_t prev = _i64(prev_index)
    cdef int64_t snapshot_index = log._snapshot_index
    cdef Py_ssize_t start = 0
    cdef uint64_t local, pterm
    if prev > last:
        return (False, last + 1, 0)
    if prev < snapshot_index:
        if prev <= snapshot_index - n:
            return (True, 0, n)
        start = snapshot_index - prev
    else:
        local = log._snapshot_term if prev == snapshot_index else log._term(prev)
        if not _u64(prev_term, &pterm) or pterm != local:
            return (False, prev if prev == snapshot_index else log._first_of_term(prev), local)
    # Entries prev+1+k for k in [start, stop) exist locally and must match; the rest are new.
    cdef Py_ssize_t stop = n if last - prev >= n else last - prev
    cdef Py_ssize_t k = start
    cdef Py_ssize_t r = 0
    cdef int64_t run_end = 0     # first index past run r
    cdef uint64_t run_term = 0
    cdef int64_t index
    cdef Py_buffer view
    cdef const uint64_t* incoming
    if k < stop:
        r = log._run_of(prev + 1 + k)
        run_term = log._rt[r]
        run_end = log._rf[r + 1] if r + 1 < log._nr else last + 1
    if _try_u64_buffer(terms, &view):
        incoming = <const uint64_t*>view.buf
        while k < stop:
            index = prev + 1 + k
            if index >= run_end:
                r += 1
                run_term = log._rt[r]
                run_end = log._rf[r + 1] if r + 1 < log._nr else last + 1
            if incoming[k] != run_term:
                break
            k += 1
        PyBuffer_Release(&view)
    else:
        while k < stop:
            index = prev + 1 + k
            if index >= run_end:
                r += 1
                run_term = log._rt[r]
                run_end = log._rf[r + 1] if r + 1 < log._nr else last + 1
            if terms[k] != run_term:
                break
            k += 1
    if k == stop:
        return (True, 0, k)
    index = prev + 1 + k
    if index <= _i64(commit_index):
        raise LogSafetyError(f"AppendEntries would truncate committed entry {index} (commit {commit_index})")
    return (True, index, k)


cdef int _cmp_desc(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const int64_t*>a)[0]
    cdef int64_t y = (<const int64_t*>b)[0]
    return (x < y) - (x > y)


cdef enum:
    # A cluster of up to this many voters is sorted by insertion on the C stack; larger ones use qsort.
    _SMALL = 7


cdef inline void _insertion_sort_desc(int64_t* v, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef int64_t x
    for i in range(1, n):
        x = v[i]
        j = i
        while j > 0 and v[j - 1] < x:
            v[j] = v[j - 1]
            j -= 1
        v[j] = x


cdef bint _load_matches(object matches, int64_t* vals, Py_ssize_t n) except -1:
    """Copy `matches` into vals as int64; False when one is not an int or does not fit."""
    cdef Py_buffer view
    cdef const uint64_t* src
    cdef Py_ssize_t i
    cdef int overflow = 0
    if _try_u64_buffer(matches, &view):
        src = <const uint64_t*>view.buf
        for i in range(n):
            if src[i] > <uint64_t>INT64_MAX:
                PyBuffer_Release(&view)
                return False
            vals[i] = <int64_t>src[i]
        PyBuffer_Release(&view)
        return True
    for i in range(n):
        item = matches[i]
        if type(item) is not int:
            return False
        vals[i] = PyLong_AsLongLongAndOverflow(item, &overflow)
        if overflow:
            return False
    return True


def quorum_commit(matches):
    """The largest index replicated on a majority of `matches` (one match index per voter); see _log_py.

    ValueError on an empty configuration. The caller applies the current-term rule (Raft figure 8).
    """
    cdef Py_ssize_t n = len(matches)
    if n == 0:
        raise ValueError("quorum of an empty configuration")
    if not isinstance(matches, (list, tuple)) and not PyObject_CheckBuffer(matches):
        matches = list(matches)
    cdef int64_t small[_SMALL]
    cdef int64_t* vals = small
    cdef int64_t result
    if n > _SMALL:
        vals = <int64_t*>PyMem_Malloc(n * sizeof(int64_t))
        if vals == NULL:
            raise MemoryError()
    try:
        if not _load_matches(matches, vals, n):
            # Values outside int64 or not ints: the reference rule, on Python objects.
            return sorted(matches, reverse=True)[n // 2]
        if n <= _SMALL:
            _insertion_sort_desc(vals, n)
        else:
            qsort(vals, n, sizeof(int64_t), _cmp_desc)
        result = vals[n // 2]
    finally:
        if vals != small:
            PyMem_Free(vals)
    return result


def joint_quorum_commit(incoming, outgoing):
    """The commit index under joint consensus: a majority of both configurations (dissertation 4.3).

    An empty `outgoing` means no joint configuration: the result is quorum_commit(incoming).
    """
    if len(outgoing) == 0:
        return quorum_commit(incoming)
    return min(quorum_commit(incoming), quorum_commit(outgoing))
