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
    """The terms of a log's entries `(snapshot_index, last_index]` in a C array (see _log_py.LogIndex).

    Storage: `_buf[_start:_start + _len]` holds the terms; compact_to only moves `_start`, and
    the dead prefix is reclaimed by memmove when growing would otherwise be needed.
    """

    cdef uint64_t* _buf
    cdef Py_ssize_t _start
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef int64_t _snapshot_index
    cdef uint64_t _snapshot_term

    def __cinit__(self, *args, **kwargs):
        self._buf = NULL
        self._start = 0
        self._len = 0
        self._cap = 0

    def __dealloc__(self):
        PyMem_Free(self._buf)

    def __init__(self, snapshot_index=0, snapshot_term=0):
        self.reset(snapshot_index, snapshot_term)

    cdef inline uint64_t* _terms(self) noexcept:
        return self._buf + self._start

    cdef int _reserve(self, Py_ssize_t extra) except -1:
        """Make room for `extra` more terms after the last one (amortized doubling)."""
        cdef Py_ssize_t need = self._len + extra
        cdef Py_ssize_t cap
        cdef uint64_t* buf
        if extra < 0 or need < self._len:
            raise MemoryError()
        if self._start + need <= self._cap:
            return 0
        if self._start and need <= self._cap // 2:
            # More than half the array is a compacted prefix: slide the live terms down instead of growing.
            memmove(self._buf, self._buf + self._start, self._len * sizeof(uint64_t))
            self._start = 0
            return 0
        cap = max(16, self._cap * 2, need)
        if self._start:
            memmove(self._buf, self._buf + self._start, self._len * sizeof(uint64_t))
            self._start = 0
        if <size_t>cap > (<size_t>-1) // sizeof(uint64_t):
            raise MemoryError()
        buf = <uint64_t*>PyMem_Realloc(self._buf, cap * sizeof(uint64_t))
        if buf == NULL:
            raise MemoryError()
        self._buf = buf
        self._cap = cap
        return 0

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
        return self._buf[self._start + self._len - 1] if self._len else self._snapshot_term

    def __len__(self):
        return self._len

    def term_at(self, index):
        """Term of entry `index`; snapshot_index answers snapshot_term. IndexError outside."""
        cdef int64_t i = _i64(index)
        if i == self._snapshot_index:
            return self._snapshot_term
        if i < self._snapshot_index or i > self._snapshot_index + self._len:
            raise IndexError(f"index {index} outside [{self._snapshot_index}, {self._snapshot_index + self._len}]")
        return self._buf[self._start + (i - self._snapshot_index - 1)]

    def append(self, term, count=1):
        """Append `count` entries of `term`. ValueError if term < last_term or count < 0."""
        if count < 0:
            raise ValueError("count must be >= 0")
        if term < self._last_term():
            raise ValueError(f"term {term} below last term {self._last_term()}")
        cdef uint64_t t = term
        cdef Py_ssize_t n = count
        cdef Py_ssize_t k
        self._reserve(n)
        cdef uint64_t* dst = self._terms() + self._len
        for k in range(n):
            dst[k] = t
        self._len += n

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
        cdef Py_ssize_t k
        for k in range(n):
            if src[k] < prev:
                raise ValueError(f"term {src[k]} below last term {prev}")
            prev = src[k]
        self._reserve(n)
        memcpy(self._terms() + self._len, src, n * sizeof(uint64_t))
        self._len += n
        return 0

    def truncate_from(self, index):
        """Drop entries `[index, last_index]`. IndexError unless first_index <= index <= last_index + 1."""
        cdef int64_t i = _i64(index)
        if i <= self._snapshot_index or i > self._snapshot_index + self._len + 1:
            raise IndexError(f"cannot truncate from {index}: log holds "
                             f"[{self._snapshot_index + 1}, {self._snapshot_index + self._len}]")
        self._len = i - self._snapshot_index - 1

    def compact_to(self, index):
        """Drop entries `[first_index, index]`, remembering index's term. IndexError unless snapshot_index <= index <= last_index."""
        cdef int64_t i = _i64(index)
        if i < self._snapshot_index or i > self._snapshot_index + self._len:
            raise IndexError(f"cannot compact to {index}: log holds "
                             f"[{self._snapshot_index + 1}, {self._snapshot_index + self._len}]")
        cdef Py_ssize_t offset = i - self._snapshot_index
        if offset:
            self._snapshot_term = self._buf[self._start + offset - 1]
            self._start += offset
            self._len -= offset
            self._snapshot_index = i
            if self._len == 0:
                self._start = 0

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
        self._start = 0
        self._len = 0

    def terms(self, lo, hi):
        """The terms of entries `[lo, hi)` as array('Q'). IndexError outside [first_index, last_index + 1]."""
        cdef int64_t a = _i64(lo)
        cdef int64_t b = _i64(hi)
        if a > b or a <= self._snapshot_index or b > self._snapshot_index + self._len + 1:
            raise IndexError(f"range [{lo}, {hi}) outside "
                             f"[{self._snapshot_index + 1}, {self._snapshot_index + self._len + 1})")
        cdef carray.array out = carray.clone(_TERMS_TEMPLATE, b - a, False)
        if b > a:
            memcpy(out.data.as_voidptr, self._terms() + (a - self._snapshot_index - 1), (b - a) * sizeof(uint64_t))
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
        cdef uint64_t* t = self._terms()
        cdef Py_ssize_t offset = index - self._snapshot_index - 1
        cdef uint64_t term = t[offset]
        while offset > 0 and t[offset - 1] == term:
            offset -= 1
        return offset + self._snapshot_index + 1

    def find_conflict_by_term(self, index, term):
        """The largest j <= min(index, last_index) with term_at(j) <= term, or snapshot_index."""
        cdef int64_t j = min(_i64(index), self._snapshot_index + self._len)
        if j < self._snapshot_index or term < 0:
            return self._snapshot_index
        cdef uint64_t t = term if term <= 0xFFFFFFFFFFFFFFFF else 0xFFFFFFFFFFFFFFFF
        cdef uint64_t* terms = self._terms()
        cdef int64_t base = self._snapshot_index + 1
        while j >= base and terms[j - base] > t:
            j -= 1
        return j


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
        local = log._snapshot_term if prev == snapshot_index else log._buf[log._start + (prev - snapshot_index - 1)]
        if not _u64(prev_term, &pterm) or pterm != local:
            return (False, prev if prev == snapshot_index else log._first_of_term(prev), local)
    # Entries prev+1+k for k in [start, stop) exist locally and must match; the rest are new.
    cdef Py_ssize_t stop = n if last - prev >= n else last - prev
    cdef const uint64_t* local_terms = log._buf
    cdef Py_ssize_t base = log._start + (prev - snapshot_index)  # local_terms[base + k] is entry prev+1+k
    cdef Py_ssize_t k = start
    cdef Py_buffer view
    cdef const uint64_t* incoming
    if _try_u64_buffer(terms, &view):
        incoming = <const uint64_t*>view.buf
        while k < stop and local_terms[base + k] == incoming[k]:
            k += 1
        PyBuffer_Release(&view)
    else:
        while k < stop and local_terms[base + k] == terms[k]:
            k += 1
    if k == stop:
        return (True, 0, k)
    cdef int64_t index = prev + 1 + k
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
