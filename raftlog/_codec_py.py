"""Pure-Python twin of src_pyx/_codec.pyx: entry records, record batches, wire frames.

One encoding travels from client to disk to wire. An entry record is
`term u64 | kind u8 | crc32 u32 | len u32 | payload` (big-endian); the CRC (zlib crc32)
covers every other byte of the record: term, kind, len and payload. A batch is records back
to back in one buffer. A frame is `length u32 | type u8 | body`, where length counts the
type byte and the body. This module is the reference: the Cython module behaves the same,
errors included.
"""
from __future__ import annotations

import struct
import zlib
from array import array
from typing import Iterable, Sequence

from raftlog._codec_constants import (  # noqa: F401 - re-exported: part of this module's __all__
    RECORD_HEADER_SIZE, FRAME_HEADER_SIZE, DEFAULT_MAX_FRAME, MAGIC, PROTOCOL_VERSION, KIND_DATA,
    KIND_NOOP, KIND_CONF, KIND_SESSION, FRAME_HANDSHAKE, FRAME_RAFT, FRAME_APPEND, FRAME_APPENDED,
    FRAME_ERROR, FRAME_READ, FRAME_ENTRIES, FRAME_STATUS, FRAME_STATUS_REPLY, ROLE_PEER,
    ROLE_CLIENT, ERR_NOT_LEADER, ERR_TIMEOUT, ERR_TOO_LARGE, ERR_BAD_REQUEST, ERR_SHUTTING_DOWN,
    ERR_CLUSTER_MISMATCH, ERR_VERSION, ERR_INTERNAL, ERR_SESSION_EXPIRED, ERR_REMOVED, ERR_COMPACTED,
    READ_STALE, READ_LINEARIZABLE,
    READ_LEASE,
)
from raftlog.errors import FrameError

__all__ = [
    "RECORD_HEADER_SIZE", "FRAME_HEADER_SIZE", "DEFAULT_MAX_FRAME", "MAGIC", "PROTOCOL_VERSION",
    "KIND_DATA", "KIND_NOOP", "KIND_CONF", "KIND_SESSION",
    "FRAME_HANDSHAKE", "FRAME_RAFT", "FRAME_APPEND", "FRAME_APPENDED", "FRAME_ERROR",
    "FRAME_READ", "FRAME_ENTRIES", "FRAME_STATUS", "FRAME_STATUS_REPLY",
    "ROLE_PEER", "ROLE_CLIENT",
    "ERR_NOT_LEADER", "ERR_TIMEOUT", "ERR_TOO_LARGE", "ERR_BAD_REQUEST", "ERR_SHUTTING_DOWN",
    "ERR_CLUSTER_MISMATCH", "ERR_VERSION", "ERR_INTERNAL", "ERR_SESSION_EXPIRED", "ERR_REMOVED", "ERR_COMPACTED",
    "READ_STALE", "READ_LINEARIZABLE", "READ_LEASE",
    "RecordBatch", "encode_record", "encode_records", "FrameDecoder",
    "encode_handshake", "encode_raft", "encode_append", "encode_appended", "encode_appended_run", "encode_error",
    "encode_read", "encode_entries", "encode_status", "encode_status_reply",
]

_MAX_KIND = KIND_SESSION

_REC = struct.Struct(">QBII")
_U64 = struct.Struct(">Q")
_FRAME = struct.Struct(">IB")
_HANDSHAKE = struct.Struct(">4sHBQQ")
_RAFT = struct.Struct(">BQQQQQQBQQI")
_APPENDED = struct.Struct(">QQI")
_ERROR = struct.Struct(">QBQ")
_READ = struct.Struct(">QQIIB")
_ENTRIES = struct.Struct(">QQI")
_LEN16 = struct.Struct(">H")


def _record_crc(term_kind: bytes | memoryview, len_and_payload: bytes | memoryview) -> int:
    return zlib.crc32(len_and_payload, zlib.crc32(term_kind))


def encode_record(term: int, kind: int, payload: bytes) -> bytes:
    """One entry record for `payload`. OverflowError on a term or length out of range, ValueError on a bad kind."""
    return encode_records(term, kind, (payload,))


def encode_records(term: int, kind: int, payloads: Iterable[bytes]) -> bytes:
    """Records for `payloads`, all of `term` and `kind`, back to back in one buffer."""
    if not 0 <= kind <= _MAX_KIND:
        raise ValueError(f"unknown record kind {kind}")
    if not 0 <= term < 1 << 64:
        raise OverflowError(f"term {term} out of range")
    term_kind = _REC.pack(term, kind, 0, 0)[:9]
    out = bytearray()
    for payload in payloads:
        payload = memoryview(payload)
        n = payload.nbytes
        if n >= 1 << 32:
            raise OverflowError("payload too large for one record")
        length = n.to_bytes(4, "big")
        crc = zlib.crc32(payload, zlib.crc32(length, zlib.crc32(term_kind)))
        out += term_kind
        out += crc.to_bytes(4, "big")
        out += length
        out += payload
    return bytes(out)


class RecordBatch:
    """A run of entry records in one contiguous buffer, parsed once; slices share the buffer.

    `RecordBatch(buf)` parses and (with verify=True) checks every CRC, raising FrameError
    naming the record's position. The buffer must not change while the batch lives.
    """

    __slots__ = ("_buf", "_offsets")

    def __init__(self, buf: bytes | bytearray | memoryview = b"", verify: bool = True) -> None:
        mv = memoryview(buf).cast("B") if not isinstance(buf, memoryview) or buf.format != "B" else buf
        offsets = array("Q", [0])
        pos = 0
        end = len(mv)
        count = 0
        while pos < end:
            if end - pos < RECORD_HEADER_SIZE:
                raise FrameError(f"record {count}: truncated header", count)
            _term, kind, crc, length = _REC.unpack_from(mv, pos)
            if kind > _MAX_KIND:
                raise FrameError(f"record {count}: unknown kind {kind}", count)
            stop = pos + RECORD_HEADER_SIZE + length
            if stop > end:
                raise FrameError(f"record {count}: truncated payload", count)
            if verify and _record_crc(mv[pos:pos + 9], mv[pos + 13:stop]) != crc:
                raise FrameError(f"record {count}: bad crc", count)
            pos = stop
            count += 1
            offsets.append(pos)
        self._buf = mv
        self._offsets = offsets

    @classmethod
    def _view(cls, buf: memoryview, offsets: array) -> "RecordBatch":
        batch = cls.__new__(cls)
        batch._buf = buf
        batch._offsets = offsets
        return batch

    @classmethod
    def encode(cls, term: int, kind: int, payloads: Iterable[bytes]) -> "RecordBatch":
        """A batch of fresh records for `payloads` (see encode_records)."""
        return cls(encode_records(term, kind, payloads), verify=False)

    @classmethod
    def concat(cls, batches: Sequence["RecordBatch"]) -> "RecordBatch":
        """One batch holding the records of `batches` in order (one copy)."""
        if len(batches) == 1:
            return batches[0]
        return cls(b"".join([b.buffer for b in batches]), verify=False)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @property
    def nbytes(self) -> int:
        """Size of the records in bytes."""
        return self._offsets[-1] - self._offsets[0]

    @property
    def buffer(self) -> memoryview:
        """The records as one contiguous buffer (no copy)."""
        return self._buf[self._offsets[0]:self._offsets[-1]]

    def _at(self, i: int) -> int:
        n = len(self._offsets) - 1
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record {i} outside batch of {n}")
        return self._offsets[i]

    def term(self, i: int) -> int:
        """Term of record i."""
        return _U64.unpack_from(self._buf, self._at(i))[0]

    def kind(self, i: int) -> int:
        """Kind of record i."""
        return self._buf[self._at(i) + 8]

    def payload(self, i: int) -> bytes:
        """Payload of record i (a copy)."""
        pos = self._at(i)
        return bytes(self._buf[pos + RECORD_HEADER_SIZE:self._record_end(i)])

    def _record_end(self, i: int) -> int:
        n = len(self._offsets) - 1
        return self._offsets[i + 1 if i >= 0 else i + n + 1]

    def record(self, i: int) -> memoryview:
        """Record i as a slice of the buffer (no copy)."""
        pos = self._at(i)
        return self._buf[pos:self._record_end(i)]

    def terms(self) -> array:
        """The terms of all records as array('Q')."""
        return array("Q", [_U64.unpack_from(self._buf, pos)[0] for pos in self._offsets[:-1]])

    def slice(self, lo: int, hi: int) -> "RecordBatch":
        """Records `[lo, hi)` as a batch sharing this buffer; bounds clamp like list slicing."""
        lo, hi, _ = slice(lo, hi).indices(len(self))
        if hi < lo:
            hi = lo
        return RecordBatch._view(self._buf, self._offsets[lo:hi + 1])

    def prefix_count(self, max_bytes: int) -> int:
        """How many leading records fit in `max_bytes` (at least 1 when the batch is not empty)."""
        offsets = self._offsets
        n = len(offsets) - 1
        if n == 0:
            return 0
        limit = offsets[0] + max_bytes
        k = 1
        while k < n and offsets[k + 1] <= limit:
            k += 1
        return k

    def items(self, first_index: int) -> list[tuple[bytes, bytes]]:
        """`(key, record)` pairs for LMDB putmulti: key is the index as 8-byte big-endian, record a bytes copy."""
        if first_index < 0 or first_index + len(self) > 1 << 64:
            raise OverflowError(f"indexes from {first_index} do not fit 8 bytes")
        buf = self._buf
        offsets = self._offsets
        return [(_U64.pack(first_index + i), bytes(buf[offsets[i]:offsets[i + 1]])) for i in range(len(offsets) - 1)]

    def entries(self, first_index: int) -> list[tuple[int, int, int, bytes]]:
        """`(index, term, kind, payload)` for every record, numbering from `first_index`."""
        buf = self._buf
        offsets = self._offsets
        out = []
        for i in range(len(offsets) - 1):
            pos = offsets[i]
            term, kind, _crc, _len = _REC.unpack_from(buf, pos)
            out.append((first_index + i, term, kind, bytes(buf[pos + RECORD_HEADER_SIZE:offsets[i + 1]])))
        return out

    def find_kind(self, kind: int, start: int = 0) -> int:
        """Position of the first record at or after `start` whose kind is `kind`; -1 when there is none."""
        buf = self._buf
        offsets = self._offsets
        for i in range(max(start, 0), len(offsets) - 1):
            if buf[offsets[i] + 8] == kind:
                return i
        return -1

    def restamp(self, term: int) -> "RecordBatch":
        """A copy of this batch with every record's term set to `term` and its CRC recomputed."""
        if not 0 <= term < 1 << 64:
            raise OverflowError(f"term {term} out of range")
        base = self._offsets[0]
        out = bytearray(self.buffer)
        packed = _U64.pack(term)
        offsets = self._offsets
        for i in range(len(offsets) - 1):
            pos = offsets[i] - base
            stop = offsets[i + 1] - base
            out[pos:pos + 8] = packed
            crc = zlib.crc32(out[pos + 13:stop], zlib.crc32(out[pos:pos + 9]))
            out[pos + 9:pos + 13] = crc.to_bytes(4, "big")
        return RecordBatch(bytes(out), verify=False)


def _frame(ftype: int, body: bytes) -> bytes:
    if len(body) + 1 > 0xFFFFFFFF:
        raise OverflowError("frame too large")
    return _FRAME.pack(len(body) + 1, ftype) + body


def _raw(data: bytes | bytearray | memoryview) -> bytes:
    """The bytes of any buffer (a memoryview of wider items counts its bytes, not its items)."""
    return bytes(memoryview(data))


def _str16(value: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    raw = value.encode()
    if len(raw) >= 1 << 16:
        raise OverflowError("string too long for a frame field")
    return _LEN16.pack(len(raw)) + raw


def _pack_error(exc: struct.error, values: Iterable[object]) -> Exception:
    """struct's error as Python's: TypeError for a value that is not an int, OverflowError for one out of range."""
    if all(isinstance(v, (int, bytes)) for v in values):
        return OverflowError(str(exc))
    return TypeError(str(exc))


def _pack(st: struct.Struct, *values: int) -> bytes:
    try:
        return st.pack(*values)
    except struct.error as exc:
        raise _pack_error(exc, values) from None


def _records_bytes(records: "RecordBatch | bytes | bytearray | memoryview | None") -> bytes:
    if records is None:
        return b""
    if isinstance(records, RecordBatch):
        return bytes(records.buffer)
    return _raw(records)


def encode_handshake(version: int, role: int, node_id: int, cluster_id: str, auth: bytes = b"",
                     incarnation: int = 0) -> bytes:
    """The first frame on every connection: magic, protocol version, role, sender id, its data dir's incarnation
    (0 from a client), cluster id, auth. Decoded as
    (FRAME_HANDSHAKE, version, role, id, cluster id, auth, incarnation)."""
    auth = _raw(auth)
    if len(auth) >= 1 << 16:
        raise OverflowError("auth too long for a frame field")
    body = (_pack(_HANDSHAKE, MAGIC, version, role, node_id, incarnation) + _str16(cluster_id)
            + _LEN16.pack(len(auth)) + auth)
    return _frame(FRAME_HANDSHAKE, body)


def encode_raft(msg_type: int, to: int, frm: int, term: int, log_term: int, index: int, commit: int,
                reject: bool, hint_index: int, hint_term: int, context: bytes = b"",
                entries: "RecordBatch | bytes | None" = None) -> bytes:
    """A Raft message between peers; `entries` is a batch of records (AppendEntries) or None."""
    context = _raw(context)
    if len(context) >= 1 << 32:
        raise OverflowError("context too long")
    head = _pack(_RAFT, msg_type, to, frm, term, log_term, index, commit, 1 if reject else 0,
                 hint_index, hint_term, len(context))
    return _frame(FRAME_RAFT, head + context + _records_bytes(entries))


def encode_append(request_id: int, records: "RecordBatch | bytes") -> bytes:
    """A client's request to append the payloads in `records`."""
    return _frame(FRAME_APPEND, _pack(_U64, request_id) + _records_bytes(records))


def encode_appended(request_id: int, first_index: int, count: int) -> bytes:
    """The reply to an append: its records took indexes `[first_index, first_index + count)`."""
    return _frame(FRAME_APPENDED, _pack(_APPENDED, request_id, first_index, count))


def encode_appended_run(request_ids: Sequence[int], counts: Sequence[int], first_index: int) -> bytes:
    """The Appended replies of requests whose records lie back to back from `first_index`, as one bytes.

    Request `request_ids[k]` took `counts[k]` indexes right after request k-1's: the same
    bytes as encode_appended for each in turn, joined; ValueError when the lengths differ.
    """
    _pack(_U64, first_index)     # a u64 even when there is no request (as the extension's argument)
    if len(counts) != len(request_ids):
        raise ValueError(f"{len(request_ids)} request ids but {len(counts)} counts")
    out = []
    index = first_index
    for request_id, count in zip(request_ids, counts):
        out.append(_frame(FRAME_APPENDED, _pack(_APPENDED, request_id, index, count)))
        index += count
    return b"".join(out)


def encode_error(request_id: int, code: int, leader_id: int = 0, leader_address: str = "", message: str = "") -> bytes:
    """A failed request (request_id 0: the connection) with an error code and a leader hint."""
    return _frame(FRAME_ERROR, _pack(_ERROR, request_id, code, leader_id) + _str16(leader_address) + _str16(message))


def encode_read(request_id: int, start: int, max_entries: int, max_bytes: int, consistency: int = 0) -> bytes:
    """A client's request for committed data entries from index `start`, bounded by count and bytes.

    `consistency` is READ_STALE (answer from this node's applied log), READ_LINEARIZABLE
    (ReadIndex) or READ_LEASE (leader lease); ValueError for anything else.
    """
    if not READ_STALE <= consistency <= READ_LEASE:
        raise ValueError(f"unknown read consistency {consistency}")
    return _frame(FRAME_READ, _pack(_READ, request_id, start, max_entries, max_bytes, consistency))


def encode_entries(request_id: int, next_index: int, indexes: Sequence[int], records: "RecordBatch | bytes") -> bytes:
    """The reply to a read: one index per record, and where the next read should start."""
    body = _pack(_ENTRIES, request_id, next_index, len(indexes))
    try:
        body += struct.pack(f">{len(indexes)}Q", *indexes)
    except struct.error as exc:
        raise _pack_error(exc, indexes) from None
    return _frame(FRAME_ENTRIES, body + _records_bytes(records))


def encode_status(request_id: int) -> bytes:
    """A client's request for the node's status."""
    return _frame(FRAME_STATUS, _pack(_U64, request_id))


def encode_status_reply(request_id: int, payload: bytes) -> bytes:
    """The node's status as JSON bytes."""
    return _frame(FRAME_STATUS_REPLY, _pack(_U64, request_id) + _raw(payload))


def _take_str(body: memoryview, pos: int, what: str) -> tuple[str, int]:
    if len(body) - pos < 2:
        raise FrameError(f"truncated {what}")
    n = _LEN16.unpack_from(body, pos)[0]
    pos += 2
    if len(body) - pos < n:
        raise FrameError(f"truncated {what}")
    try:
        return str(body[pos:pos + n], "utf-8"), pos + n
    except UnicodeDecodeError:
        raise FrameError(f"{what} is not UTF-8") from None


def _fixed(body: memoryview, st: struct.Struct, name: str) -> tuple:
    if len(body) != st.size:
        raise FrameError(f"{name} frame of {len(body)} bytes, expected {st.size}")
    return st.unpack_from(body, 0)


def _records(body: memoryview, pos: int) -> RecordBatch:
    return RecordBatch(body[pos:])


def _decode_handshake(body: memoryview) -> tuple:
    if len(body) < _HANDSHAKE.size:
        raise FrameError("truncated handshake")
    magic, version, role, node_id, incarnation = _HANDSHAKE.unpack_from(body, 0)
    if magic != MAGIC:
        raise FrameError("bad handshake magic")
    cluster_id, pos = _take_str(body, _HANDSHAKE.size, "cluster id")
    if len(body) - pos < 2:
        raise FrameError("truncated auth")
    n = _LEN16.unpack_from(body, pos)[0]
    pos += 2
    if len(body) - pos != n:
        raise FrameError("bad auth length")
    return (FRAME_HANDSHAKE, version, role, node_id, cluster_id, bytes(body[pos:]), incarnation)


def _decode_raft(body: memoryview) -> tuple:
    if len(body) < _RAFT.size:
        raise FrameError("truncated raft message")
    (msg_type, to, frm, term, log_term, index, commit, reject, hint_index, hint_term,
     context_len) = _RAFT.unpack_from(body, 0)
    if reject > 1:
        raise FrameError("bad reject flag")
    pos = _RAFT.size
    if len(body) - pos < context_len:
        raise FrameError("truncated raft context")
    context = bytes(body[pos:pos + context_len])
    entries = _records(body, pos + context_len)
    return (FRAME_RAFT, msg_type, to, frm, term, log_term, index, commit, bool(reject),
            hint_index, hint_term, context, entries)


def _decode_append(body: memoryview) -> tuple:
    if len(body) < 8:
        raise FrameError("truncated append")
    return (FRAME_APPEND, _U64.unpack_from(body, 0)[0], _records(body, 8))


def _decode_error(body: memoryview) -> tuple:
    if len(body) < _ERROR.size:
        raise FrameError("truncated error")
    request_id, code, leader_id = _ERROR.unpack_from(body, 0)
    address, pos = _take_str(body, _ERROR.size, "leader address")
    message, pos = _take_str(body, pos, "error message")
    if pos != len(body):
        raise FrameError("trailing bytes in error frame")
    return (FRAME_ERROR, request_id, code, leader_id, address, message)


def _decode_entries(body: memoryview) -> tuple:
    if len(body) < _ENTRIES.size:
        raise FrameError("truncated entries")
    request_id, next_index, count = _ENTRIES.unpack_from(body, 0)
    pos = _ENTRIES.size
    if (len(body) - pos) // 8 < count:
        raise FrameError("truncated entry indexes")
    indexes = array("Q", struct.unpack_from(f">{count}Q", body, pos))
    records = _records(body, pos + 8 * count)
    if len(records) != count:
        raise FrameError(f"entries frame has {len(records)} records for {count} indexes")
    return (FRAME_ENTRIES, request_id, next_index, indexes, records)


def _decode_status_reply(body: memoryview) -> tuple:
    if len(body) < 8:
        raise FrameError("truncated status reply")
    return (FRAME_STATUS_REPLY, _U64.unpack_from(body, 0)[0], bytes(body[8:]))


def _decode_body(ftype: int, body: memoryview) -> tuple:
    if ftype == FRAME_RAFT:
        return _decode_raft(body)
    if ftype == FRAME_APPEND:
        return _decode_append(body)
    if ftype == FRAME_APPENDED:
        return (FRAME_APPENDED,) + _fixed(body, _APPENDED, "appended")
    if ftype == FRAME_HANDSHAKE:
        return _decode_handshake(body)
    if ftype == FRAME_ERROR:
        return _decode_error(body)
    if ftype == FRAME_READ:
        read = _fixed(body, _READ, "read")
        if read[4] > READ_LEASE:
            raise FrameError(f"unknown read consistency {read[4]}")
        return (FRAME_READ,) + read
    if ftype == FRAME_ENTRIES:
        return _decode_entries(body)
    if ftype == FRAME_STATUS:
        return (FRAME_STATUS,) + _fixed(body, _U64, "status")
    if ftype == FRAME_STATUS_REPLY:
        return _decode_status_reply(body)
    raise FrameError(f"unknown frame type {ftype}")


_KNOWN_TYPES = frozenset((FRAME_HANDSHAKE, FRAME_RAFT, FRAME_APPEND, FRAME_APPENDED, FRAME_ERROR, FRAME_READ,
                          FRAME_ENTRIES, FRAME_STATUS, FRAME_STATUS_REPLY))


class FrameDecoder:
    """Sans-I/O frame parser: feed bytes as they arrive, get whole decoded frames back.

    Each frame comes back as a tuple whose first item is its FRAME_* type (see the encoders
    for the fields). A frame's header is checked as soon as its bytes arrive: a length over
    `max_frame` (or zero) and an unknown type raise FrameError before any of its body is
    buffered. Only a partial frame is ever buffered. After any FrameError the stream is
    unusable (the buffer is dropped) and the connection should close.
    """

    __slots__ = ("_buf", "_max_frame", "_broken")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be >= 1")
        self._buf = bytearray()
        self._max_frame = max_frame
        self._broken = False

    @property
    def max_frame(self) -> int:
        """The largest frame length accepted."""
        return self._max_frame

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole frame."""
        return len(self._buf)

    def _check_header(self, head: bytes | bytearray | memoryview) -> None:
        """Check the length (and type, when its byte is there) of the frame whose first bytes are `head`."""
        if len(head) >= 4:
            length = int.from_bytes(head[:4], "big")
            if length == 0:
                raise FrameError("empty frame")
            if length > self._max_frame:
                raise FrameError(f"frame of {length} bytes exceeds the maximum of {self._max_frame}")
        if len(head) >= 5 and head[4] not in _KNOWN_TYPES:
            raise FrameError(f"unknown frame type {head[4]}")

    def _top_up(self, data: memoryview, frames: list[tuple]) -> int:
        """Feed the partial frame in `_buf` from `data`; return how many bytes it took."""
        buf = self._buf
        pos = 0
        if len(buf) < 5:
            # The header first (5 bytes never exceed a frame: length >= 1), then check it.
            pos = min(5 - len(buf), len(data))
            buf += data[:pos]
            self._check_header(buf)
            if len(buf) < 5:
                return pos
        size = 4 + int.from_bytes(buf[:4], "big")
        take = min(size - len(buf), len(data) - pos)
        buf += data[pos:pos + take]
        pos += take
        if len(buf) == size:
            frame = bytes(buf[4:])
            buf.clear()
            frames.append(_decode_body(frame[0], memoryview(frame)[1:]))
        return pos

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple]:
        """Add `data` and return every frame it completes, in order."""
        if self._broken:
            raise FrameError("decoder is broken by an earlier error")
        data = memoryview(data).cast("B")
        frames: list[tuple] = []
        pos = 0
        end = len(data)
        try:
            if self._buf:
                pos = self._top_up(data, frames)
            while end - pos >= 4:
                self._check_header(data[pos:pos + 5])
                length = int.from_bytes(data[pos:pos + 4], "big")
                if end - pos - 4 < length:
                    break
                frame = bytes(data[pos + 4:pos + 4 + length])
                pos += 4 + length
                frames.append(_decode_body(frame[0], memoryview(frame)[1:]))
            self._buf += data[pos:]
        except FrameError:
            self._broken = True
            self._buf.clear()
            raise
        return frames
