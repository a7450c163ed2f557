"""Entry records, RecordBatch and wire frames, run against both implementations (fixture codec_mod)."""
from __future__ import annotations

import struct
import zlib
from array import array
from types import ModuleType

import pytest

from raftlog.errors import FrameError


def frame_body(frame: bytes) -> tuple[int, int, bytes]:
    """(length, type, body) of one encoded frame."""
    length, ftype = struct.unpack_from(">IB", frame)
    return length, ftype, frame[5:]


# ---- records -------------------------------------------------------------------------------

def test_record_layout_and_crc(codec_mod: ModuleType) -> None:
    rec = codec_mod.encode_record(7, codec_mod.KIND_CONF, b"abc")
    term, kind, crc, length = struct.unpack_from(">QBII", rec)
    assert (term, kind, length, rec[17:]) == (7, 2, 3, b"abc")
    assert crc == zlib.crc32(rec[13:], zlib.crc32(rec[:9]))
    assert len(rec) == codec_mod.RECORD_HEADER_SIZE + 3


def test_encode_records_accepts_any_buffer_and_counts_bytes(codec_mod: ModuleType) -> None:
    wide = memoryview(array("Q", [1, 2]))          # 2 items, 16 bytes
    out = codec_mod.encode_records(1, 0, [b"x", bytearray(b"yy"), memoryview(b"zzz"), wide])
    batch = codec_mod.RecordBatch(out)
    assert [batch.payload(i) for i in range(4)] == [b"x", b"yy", b"zzz", bytes(wide)]
    assert codec_mod.encode_records(1, 0, []) == b""
    assert codec_mod.encode_records(1, 0, iter([b"a"])) == codec_mod.encode_record(1, 0, b"a")


def test_encode_record_errors(codec_mod: ModuleType) -> None:
    with pytest.raises(ValueError):
        codec_mod.encode_record(1, 4, b"")
    with pytest.raises(ValueError):
        codec_mod.encode_record(-1, -1, b"")       # the kind is checked first
    with pytest.raises(OverflowError):
        codec_mod.encode_record(2**64, 0, b"")
    with pytest.raises(OverflowError):
        codec_mod.encode_record(-1, 0, b"")
    with pytest.raises(TypeError):
        codec_mod.encode_record(1, 0, "text")


# ---- RecordBatch ---------------------------------------------------------------------------

@pytest.fixture
def batch(codec_mod: ModuleType):
    """Three records of term 4: b"a", b"", b"ccc"."""
    return codec_mod.RecordBatch.encode(4, codec_mod.KIND_DATA, [b"a", b"", b"ccc"])


def test_batch_accessors(codec_mod: ModuleType, batch) -> None:
    assert len(batch) == 3
    assert batch.nbytes == 3 * 17 + 4
    assert [batch.term(i) for i in range(3)] == [4, 4, 4]
    assert [batch.kind(i) for i in range(3)] == [0, 0, 0]
    assert [batch.payload(i) for i in (0, 1, 2, -1)] == [b"a", b"", b"ccc", b"ccc"]
    assert bytes(batch.record(1)) == codec_mod.encode_record(4, 0, b"")
    assert batch.terms() == array("Q", [4, 4, 4])
    assert isinstance(batch.buffer, memoryview)
    for bad in (3, -4):
        with pytest.raises(IndexError):
            batch.payload(bad)


def test_batch_accepts_bytes_bytearray_memoryview(codec_mod: ModuleType, batch) -> None:
    raw = bytes(batch.buffer)
    for buf in (raw, bytearray(raw), memoryview(raw), memoryview(b"xx" + raw)[2:]):
        parsed = codec_mod.RecordBatch(buf)
        assert parsed.entries(1) == batch.entries(1)
    assert len(codec_mod.RecordBatch()) == 0


def test_batch_slice_shares_and_clamps(codec_mod: ModuleType, batch) -> None:
    assert [e[3] for e in batch.slice(1, 3).entries(0)] == [b"", b"ccc"]
    assert len(batch.slice(2, 1)) == 0
    assert len(batch.slice(-2, 100)) == 2
    assert batch.slice(1, 2).buffer.obj is batch.buffer.obj
    inner = batch.slice(1, 3).slice(1, 2)
    assert inner.payload(0) == b"ccc"


def test_batch_items_keys_are_big_endian_indexes(codec_mod: ModuleType, batch) -> None:
    items = batch.items(255)
    assert [k for k, _ in items] == [struct.pack(">Q", i) for i in (255, 256, 257)]
    assert [v for _, v in items] == [bytes(batch.record(i)) for i in range(3)]
    assert all(type(v) is bytes for _, v in items)
    with pytest.raises(OverflowError):
        batch.items(-1)
    with pytest.raises(OverflowError):
        batch.items(2**64 - 2)


def test_batch_entries_numbering(batch) -> None:
    assert batch.entries(10) == [(10, 4, 0, b"a"), (11, 4, 0, b""), (12, 4, 0, b"ccc")]


def test_batch_prefix_count(codec_mod: ModuleType, batch) -> None:
    assert batch.prefix_count(0) == 1            # at least one record
    assert batch.prefix_count(18) == 1
    assert batch.prefix_count(35) == 2
    assert batch.prefix_count(55) == 3
    assert batch.prefix_count(10**9) == 3
    assert codec_mod.RecordBatch().prefix_count(100) == 0
    assert batch.slice(1, 3).prefix_count(17) == 1


def test_batch_restamp_rewrites_term_and_crc(codec_mod: ModuleType, batch) -> None:
    again = batch.slice(1, 3).restamp(9)
    assert again.entries(1) == [(1, 9, 0, b""), (2, 9, 0, b"ccc")]
    codec_mod.RecordBatch(again.buffer)          # CRCs verify
    assert batch.term(1) == 4                    # the original is untouched
    with pytest.raises(OverflowError):
        batch.restamp(-1)


def test_batch_concat(codec_mod: ModuleType, batch) -> None:
    both = codec_mod.RecordBatch.concat([batch, batch.slice(0, 1)])
    assert [e[3] for e in both.entries(1)] == [b"a", b"", b"ccc", b"a"]
    assert codec_mod.RecordBatch.concat([batch]) is batch
    assert len(codec_mod.RecordBatch.concat([])) == 0


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:10], "record 0: truncated header"),
    (lambda b: b[:-1], "record 2: truncated payload"),
    (lambda b: b[:8] + b"\x07" + b[9:], "record 0: unknown kind 7"),
    (lambda b: b[:-1] + b"X", "record 2: bad crc"),
])
def test_batch_errors_name_the_record(codec_mod: ModuleType, batch, mutate, message: str) -> None:
    with pytest.raises(FrameError) as info:
        codec_mod.RecordBatch(mutate(bytes(batch.buffer)))
    assert str(info.value) == message
    assert info.value.record == int(message.split()[1].rstrip(":"))


def test_batch_without_verify_skips_crc(codec_mod: ModuleType, batch) -> None:
    raw = bytes(batch.buffer)[:-1] + b"X"
    assert codec_mod.RecordBatch(raw, verify=False).payload(2) == b"ccX"


# ---- frames --------------------------------------------------------------------------------

def all_frames(codec_mod: ModuleType) -> list[tuple[bytes, tuple]]:
    """One encoded frame of every type with the tuple FrameDecoder must return (batches as payload lists)."""
    m = codec_mod
    recs = m.RecordBatch.encode(3, m.KIND_DATA, [b"p1", b"p22"])
    return [
        (m.encode_handshake(1, m.ROLE_PEER, 2, "clusterA", b"tok", 2**64 - 1),
         (m.FRAME_HANDSHAKE, 1, 1, 2, "clusterA", b"tok", 2**64 - 1)),
        (m.encode_raft(3, 1, 2, 5, 4, 10, 8, True, 7, 2, b"ctx", recs),
         (m.FRAME_RAFT, 3, 1, 2, 5, 4, 10, 8, True, 7, 2, b"ctx", [b"p1", b"p22"])),
        (m.encode_raft(1, 1, 2, 5, 0, 0, 0, False, 0, 0), (m.FRAME_RAFT, 1, 1, 2, 5, 0, 0, 0, False, 0, 0, b"", [])),
        (m.encode_append(99, recs), (m.FRAME_APPEND, 99, [b"p1", b"p22"])),
        (m.encode_append(5, bytes(recs.buffer)), (m.FRAME_APPEND, 5, [b"p1", b"p22"])),
        (m.encode_appended(99, 12, 2), (m.FRAME_APPENDED, 99, 12, 2)),
        (m.encode_error(4, m.ERR_NOT_LEADER, 3, "127.0.0.1:7003", "not leader ✓"),
         (m.FRAME_ERROR, 4, m.ERR_NOT_LEADER, 3, "127.0.0.1:7003", "not leader ✓")),
        (m.encode_error(0, m.ERR_VERSION), (m.FRAME_ERROR, 0, m.ERR_VERSION, 0, "", "")),
        (m.encode_read(6, 1, 100, 1 << 20), (m.FRAME_READ, 6, 1, 100, 1 << 20, m.READ_STALE)),
        (m.encode_read(7, 2, 5, 9, m.READ_LINEARIZABLE), (m.FRAME_READ, 7, 2, 5, 9, m.READ_LINEARIZABLE)),
        (m.encode_read(8, 3, 0, 0, m.READ_LEASE), (m.FRAME_READ, 8, 3, 0, 0, m.READ_LEASE)),
        (m.encode_entries(7, 12, [10, 11], recs), (m.FRAME_ENTRIES, 7, 12, array("Q", [10, 11]), [b"p1", b"p22"])),
        (m.encode_status(8), (m.FRAME_STATUS, 8)),
        (m.encode_status_reply(8, b'{"role": "leader"}'), (m.FRAME_STATUS_REPLY, 8, b'{"role": "leader"}')),
    ]


def plain(frame: tuple, codec_mod: ModuleType) -> tuple:
    """A decoded frame with its RecordBatch replaced by the list of payloads."""
    return tuple([b.payload(i) for i in range(len(b))] if isinstance(b, codec_mod.RecordBatch) else b
                 for b in frame)


def test_every_frame_round_trips(codec_mod: ModuleType) -> None:
    decoder = codec_mod.FrameDecoder()
    for frame, expected in all_frames(codec_mod):
        length, _ftype, body = frame_body(frame)
        assert length == len(body) + 1
        assert [plain(f, codec_mod) for f in decoder.feed(frame)] == [expected]
    assert decoder.buffered == 0


def test_frames_split_byte_by_byte(codec_mod: ModuleType) -> None:
    cases = all_frames(codec_mod)
    stream = b"".join(f for f, _ in cases)
    decoder = codec_mod.FrameDecoder()
    out = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i:i + 1])
    assert [plain(f, codec_mod) for f in out] == [e for _, e in cases]


def test_decoded_batches_survive_a_reused_input_buffer(codec_mod: ModuleType) -> None:
    frame = codec_mod.encode_append(1, codec_mod.RecordBatch.encode(1, 0, [b"keep"]))
    buf = bytearray(frame)
    (decoded,) = codec_mod.FrameDecoder().feed(buf)
    buf[:] = b"\0" * len(buf)
    assert decoded[2].payload(0) == b"keep"


def test_frame_layout_is_big_endian(codec_mod: ModuleType) -> None:
    frame = codec_mod.encode_appended(0x0102030405060708, 9, 0x0A0B0C0D)
    assert frame == struct.pack(">IBQQI", 21, codec_mod.FRAME_APPENDED, 0x0102030405060708, 9, 0x0A0B0C0D)
    hs = codec_mod.encode_handshake(codec_mod.PROTOCOL_VERSION, codec_mod.ROLE_CLIENT, 0, "c")
    assert hs[5:9] == codec_mod.MAGIC


def test_appended_run_equals_one_appended_per_request(codec_mod: ModuleType) -> None:
    m = codec_mod
    run = m.encode_appended_run([7, 3, 2**64 - 1, 9], [1, 4, 0, 2], 100)
    assert run == (m.encode_appended(7, 100, 1) + m.encode_appended(3, 101, 4)
                   + m.encode_appended(2**64 - 1, 105, 0) + m.encode_appended(9, 105, 2))
    assert [f[1:] for f in m.FrameDecoder().feed(run)] == [(7, 100, 1), (3, 101, 4), (2**64 - 1, 105, 0),
                                                            (9, 105, 2)]
    assert m.encode_appended_run([], [], 5) == b""
    assert m.encode_appended_run((1,), array("I", [3]), 2**64 - 1) == m.encode_appended(1, 2**64 - 1, 3)


@pytest.mark.parametrize("call, error", [
    (lambda m: m.encode_appended_run([1, 2], [1], 0), ValueError),
    (lambda m: m.encode_appended_run([1, 2], [5, 1], 2**64 - 3), OverflowError),   # the second request's index
    (lambda m: m.encode_appended_run([1], [2**32], 0), OverflowError),
    (lambda m: m.encode_appended_run([-1], [1], 0), OverflowError),
    (lambda m: m.encode_appended_run([1], [1], 2**64), OverflowError),
    (lambda m: m.encode_appended_run(["1"], [1], 0), TypeError),
])
def test_appended_run_errors(codec_mod: ModuleType, call, error: type) -> None:
    with pytest.raises(error):
        call(codec_mod)


@pytest.mark.parametrize("encode", [
    lambda m: m.encode_appended(2**64, 0, 0),
    lambda m: m.encode_appended(-1, 0, 0),
    lambda m: m.encode_read(0, 0, 2**32, 0),
    lambda m: m.encode_error(0, 256),
    lambda m: m.encode_handshake(2**16, 1, 1, "c"),
    lambda m: m.encode_handshake(1, 1, 1, "c", b"x" * 65536),
    lambda m: m.encode_error(0, 1, 0, "x" * 65536),
    lambda m: m.encode_entries(0, 0, [2**64], b""),
    lambda m: m.encode_raft(256, 0, 0, 0, 0, 0, 0, False, 0, 0),
])
def test_encoders_raise_overflow(codec_mod: ModuleType, encode) -> None:
    with pytest.raises(OverflowError):
        encode(codec_mod)


def test_encoders_reject_non_buffers(codec_mod: ModuleType) -> None:
    with pytest.raises(TypeError):
        codec_mod.encode_append(1, 5)
    with pytest.raises(TypeError):
        codec_mod.encode_status_reply(1, "text")


# ---- FrameDecoder errors -------------------------------------------------------------------

def bad(codec_mod: ModuleType, data: bytes, max_frame: int = 1 << 20) -> FrameError:
    """The FrameError raised by feeding `data` to a fresh decoder."""
    decoder = codec_mod.FrameDecoder(max_frame)
    with pytest.raises(FrameError) as info:
        decoder.feed(data)
    with pytest.raises(FrameError, match="broken"):
        decoder.feed(b"")
    return info.value


def test_oversized_length_raises_on_the_header_alone(codec_mod: ModuleType) -> None:
    decoder = codec_mod.FrameDecoder()
    with pytest.raises(FrameError, match="exceeds the maximum"):
        decoder.feed(struct.pack(">IB", 2**31, codec_mod.FRAME_APPEND))
    assert decoder.buffered == 0
    # The header arriving in pieces after a partial frame: still raised at the 4th byte.
    decoder = codec_mod.FrameDecoder(100)
    decoder.feed(b"\x00\x00")
    with pytest.raises(FrameError, match="exceeds the maximum of 100"):
        decoder.feed(b"\x00\x65" + b"\0" * 1000)
    assert decoder.buffered == 0


def test_unknown_type_raises_before_the_body(codec_mod: ModuleType) -> None:
    assert "unknown frame type 99" in str(bad(codec_mod, struct.pack(">IB", 1000, 99)))


def test_empty_frame(codec_mod: ModuleType) -> None:
    assert str(bad(codec_mod, b"\0\0\0\0")) == "empty frame"


@pytest.mark.parametrize("ftype, body, message", [
    (11, b"\0" * 19, "appended frame of 19 bytes, expected 20"),
    (13, b"\0" * 26, "read frame of 26 bytes, expected 25"),
    (13, b"\0" * 24, "read frame of 24 bytes, expected 25"),
    (15, b"", "status frame of 0 bytes, expected 8"),
    (16, b"\0" * 7, "truncated status reply"),
    (10, b"\0" * 7, "truncated append"),
    (2, b"\0" * 69, "truncated raft message"),
    (1, b"RLOX" + b"\0" * 19 + b"\0\0\0\0", "bad handshake magic"),
    (1, b"RLOG" + b"\0" * 19 + b"\0\x05ab", "truncated cluster id"),
    (1, b"RLOG" + b"\0" * 19 + b"\0\x01\xff\0\0", "cluster id is not UTF-8"),
    (1, b"RLOG" + b"\0" * 19 + b"\0\0\0\x02x", "bad auth length"),
    (12, b"\0" * 17 + b"\0\0", "truncated error message"),
    (12, b"\0" * 17 + b"\0\0\0\0!", "trailing bytes in error frame"),
    (14, b"\0" * 16 + b"\0\0\0\x02" + b"\0" * 15, "truncated entry indexes"),
    (14, b"\0" * 16 + b"\0\0\0\x01" + b"\0" * 8, "entries frame has 0 records for 1 indexes"),
])
def test_malformed_bodies(codec_mod: ModuleType, ftype: int, body: bytes, message: str) -> None:
    assert str(bad(codec_mod, struct.pack(">IB", len(body) + 1, ftype) + body)) == message


def test_raft_frame_flags_and_context(codec_mod: ModuleType) -> None:
    frame = bytearray(codec_mod.encode_raft(1, 1, 2, 3, 4, 5, 6, False, 7, 8, b"ctx"))
    frame[5 + 49] = 2
    assert str(bad(codec_mod, bytes(frame))) == "bad reject flag"
    frame[5 + 49] = 0
    frame[5 + 66:5 + 70] = struct.pack(">I", 4)
    assert str(bad(codec_mod, bytes(frame))) == "truncated raft context"


def test_bad_record_inside_a_frame(codec_mod: ModuleType) -> None:
    recs = bytearray(codec_mod.encode_records(1, 0, [b"a", b"b"]))
    recs[-1] ^= 1
    assert str(bad(codec_mod, codec_mod.encode_append(1, bytes(recs)))) == "record 1: bad crc"


def test_max_frame(codec_mod: ModuleType) -> None:
    assert codec_mod.FrameDecoder().max_frame == codec_mod.DEFAULT_MAX_FRAME == 64 << 20
    with pytest.raises(ValueError):
        codec_mod.FrameDecoder(0)
    frame = codec_mod.encode_status(1)               # length 9
    assert codec_mod.FrameDecoder(9).feed(frame) == [(codec_mod.FRAME_STATUS, 1)]
    bad(codec_mod, frame, max_frame=8)


def test_partial_frame_is_buffered(codec_mod: ModuleType) -> None:
    frame = codec_mod.encode_status_reply(1, b"x" * 100)
    decoder = codec_mod.FrameDecoder()
    assert decoder.feed(frame[:50]) == []
    assert decoder.buffered == 50
    assert decoder.feed(frame[50:] + frame[:3]) == [(codec_mod.FRAME_STATUS_REPLY, 1, b"x" * 100)]
    assert decoder.buffered == 3


def test_read_consistency_outside_the_known_values_is_refused(codec_mod: ModuleType) -> None:
    m = codec_mod
    with pytest.raises(ValueError):
        m.encode_read(1, 1, 1, 1, 3)
    frame = bytearray(m.encode_read(1, 1, 1, 1, m.READ_LEASE))
    frame[-1] = 3          # the consistency byte ends the frame
    with pytest.raises(FrameError) as info:
        m.FrameDecoder().feed(bytes(frame))
    assert "consistency" in str(info.value)
