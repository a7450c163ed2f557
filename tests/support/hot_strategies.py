"""Hypothesis strategies and helpers shared by the hot-path differential and fuzz tests."""
from __future__ import annotations

from array import array
from types import ModuleType
from typing import Any, Callable

from hypothesis import strategies as st

U64 = st.integers(0, 2**64 - 1)
U32 = st.integers(0, 2**32 - 1)
U16 = st.integers(0, 2**16 - 1)
U8 = st.integers(0, 255)
SMALL_BYTES = st.binary(max_size=40)
TEXT = st.text(max_size=12)
PAYLOADS = st.lists(SMALL_BYTES, max_size=6)


def outcome(call: Callable[[], Any], codec_mod: ModuleType | None = None) -> tuple:
    """("ok", normalized result) or ("error", type name, message, FrameError.record) of call()."""
    try:
        return ("ok", normalize(call(), codec_mod))
    except Exception as exc:  # noqa: BLE001 - comparing which exception each implementation raises
        return ("error", type(exc).__name__, str(exc), getattr(exc, "record", None))


def error_type(result: tuple) -> tuple:
    """An outcome reduced to its result or exception type (messages from C conversions differ)."""
    return result[:2]


def normalize(value: Any, codec_mod: ModuleType | None = None) -> Any:
    """Plain data for comparing results across implementations: batches and views become bytes."""
    if isinstance(value, (list, tuple)):
        return type(value)(normalize(v, codec_mod) for v in value)
    if isinstance(value, array):
        return ("array", value.typecode, value.tolist())
    if isinstance(value, memoryview):
        return ("view", bytes(value))
    if codec_mod is not None and hasattr(value, "entries") and hasattr(value, "buffer"):
        return ("batch", value.entries(1), bytes(value.buffer))
    return value


@st.composite
def frame_args(draw: st.DrawFn) -> tuple[str, tuple]:
    """An encoder name and arguments for it (all in range); records are given as (term, kind, payloads)."""
    records = (draw(U64), draw(st.integers(0, 3)), draw(PAYLOADS))
    name = draw(st.sampled_from(["handshake", "raft", "append", "appended", "error", "read",
                                 "entries", "status", "status_reply"]))
    if name == "handshake":
        args = (draw(U16), draw(U8), draw(U64), draw(TEXT), draw(SMALL_BYTES), draw(U64))
    elif name == "raft":
        args = (draw(U8), draw(U64), draw(U64), draw(U64), draw(U64), draw(U64), draw(U64), draw(st.booleans()),
                draw(U64), draw(U64), draw(SMALL_BYTES), draw(st.sampled_from([None, records])))
    elif name == "append":
        args = (draw(U64), records)
    elif name == "appended":
        args = (draw(U64), draw(U64), draw(U32))
    elif name == "error":
        args = (draw(U64), draw(U8), draw(U64), draw(TEXT), draw(TEXT))
    elif name == "read":
        args = (draw(U64), draw(U64), draw(U32), draw(U32))
    elif name == "entries":
        args = (draw(U64), draw(U64), draw(st.lists(U64, min_size=len(records[2]), max_size=len(records[2]))),
                records)
    elif name == "status":
        args = (draw(U64),)
    else:
        args = (draw(U64), draw(SMALL_BYTES))
    return name, args


def encode(codec_mod: ModuleType, name: str, args: tuple) -> bytes:
    """Encode frame `name` with `args`, building any records with codec_mod's RecordBatch."""
    real = tuple(codec_mod.RecordBatch.encode(*a) if isinstance(a, tuple) else a for a in args)
    return getattr(codec_mod, f"encode_{name}")(*real)
