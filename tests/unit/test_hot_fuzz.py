"""Fuzzing the decoders of both implementations: random and mutated bytes may raise FrameError and
nothing else (no crash, no other exception), and an oversized length is refused before buffering."""
from __future__ import annotations

import random
import struct
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.hot_strategies import encode, frame_args
from raftlog.errors import FrameError

FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def feed_all(codec_mod: ModuleType, chunks: list[bytes], max_frame: int) -> None:
    """Feed chunks to a fresh decoder until the first FrameError; any other exception fails the test."""
    decoder = codec_mod.FrameDecoder(max_frame)
    for chunk in chunks:
        try:
            for frame in decoder.feed(chunk):
                for item in frame:
                    if isinstance(item, codec_mod.RecordBatch):
                        item.entries(1)
        except FrameError:
            assert decoder.buffered == 0
            return
        assert decoder.buffered < max_frame + 4


@FUZZ
@given(chunks=st.lists(st.binary(max_size=64), max_size=8), max_frame=st.sampled_from([1, 16, 200, 1 << 20]))
def test_random_bytes_into_frame_decoder(codec_mod: ModuleType, chunks: list[bytes], max_frame: int) -> None:
    feed_all(codec_mod, chunks, max_frame)


@FUZZ
@given(ftype=st.sampled_from([1, 2, 10, 11, 12, 13, 14, 15, 16]), body=st.binary(max_size=120))
def test_random_bodies_of_known_types(codec_mod: ModuleType, ftype: int, body: bytes) -> None:
    feed_all(codec_mod, [struct.pack(">IB", len(body) + 1, ftype) + body], 1 << 20)


@FUZZ
@given(raw=st.binary(max_size=200), verify=st.booleans())
def test_random_bytes_into_record_batch(codec_mod: ModuleType, raw: bytes, verify: bool) -> None:
    try:
        batch = codec_mod.RecordBatch(raw, verify=verify)
    except FrameError as exc:
        assert exc.record is not None
        return
    assert batch.nbytes == len(raw)
    batch.entries(0)
    batch.items(0)
    batch.restamp(1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(frame_args(), min_size=1, max_size=3), seed=st.integers(0, 2**32))
def test_mutated_valid_frames(codec_mod: ModuleType, args: list[tuple], seed: int) -> None:
    stream = b"".join(encode(codec_mod, *a) for a in args)
    rng = random.Random(seed)
    for _ in range(10):
        data = bytearray(stream)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.5:
                data[pos] = rng.randrange(256)
            elif choice < 0.75:
                del data[pos:pos + rng.randint(1, 6)]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 6))
            if not data:
                break
        cut = rng.randint(0, len(data))
        feed_all(codec_mod, [bytes(data[:cut]), bytes(data[cut:])], rng.choice([64, 1 << 20]))


@pytest.mark.parametrize("first", [1, 3])
def test_two_gib_header_raises_at_once(codec_mod: ModuleType, first: int) -> None:
    header = struct.pack(">IB", 2**31, codec_mod.FRAME_APPEND)
    decoder = codec_mod.FrameDecoder()
    with pytest.raises(FrameError, match="exceeds the maximum"):
        decoder.feed(header)
    assert decoder.buffered == 0
    # The header split across feeds, then followed by body bytes: refused at its 4th byte, nothing kept.
    decoder = codec_mod.FrameDecoder()
    assert decoder.feed(header[:first]) == []
    with pytest.raises(FrameError, match="exceeds the maximum"):
        decoder.feed(header[first:] + b"\0" * 4096)
    assert decoder.buffered == 0


def test_large_legal_frame_in_small_chunks(codec_mod: ModuleType) -> None:
    # Buffering a partial frame must stay linear: 2 MiB fed 1 KiB at a time.
    batch = codec_mod.RecordBatch.encode(1, 0, [b"x" * 1000] * 2000)
    frame = codec_mod.encode_append(1, batch)
    decoder = codec_mod.FrameDecoder()
    out = []
    for i in range(0, len(frame), 1024):
        out += decoder.feed(frame[i:i + 1024])
        assert decoder.buffered <= len(frame)
    assert len(out) == 1 and len(out[0][2]) == 2000
