"""The hot path, Cython against its pure twin, side by side (pytest-benchmark groups pair them).

Run: python -m pytest bench/test_bench_hot.py --benchmark-only
Table: add --benchmark-json=FILE, then python bench/hot_report.py FILE > bench/RESULTS-hot.md.

Sizes are the ones a busy leader sees: an AppendEntries of 1000 entries of 100-byte payloads,
its RecordBatch handed to LMDB, and the commit rule over 3, 5 and 7 match indexes.
"""
from __future__ import annotations

import importlib
from array import array
from types import ModuleType

import pytest

IMPLS = ["cython", "python"]
N = 1000
PAYLOADS = [bytes([i % 251]) * 100 for i in range(N)]


def module(name: str, impl: str) -> ModuleType:
    """raftlog.<name> for "cython", raftlog.<name>_py for "python"."""
    return importlib.import_module(f"raftlog.{name}" if impl == "cython" else f"raftlog.{name}_py")


def raft_frame(codec: ModuleType) -> bytes:
    """An AppendEntries frame carrying N records."""
    batch = codec.RecordBatch.encode(7, codec.KIND_DATA, PAYLOADS)
    return codec.encode_raft(3, 2, 1, 7, 7, 1000, 990, False, 0, 0, b"", batch)


@pytest.mark.parametrize("impl", IMPLS)
def test_match_append_1000(benchmark, impl: str) -> None:
    """A follower re-checks a duplicate 1000-entry AppendEntries: every term compared, nothing to truncate."""
    benchmark.group = "match_append: 1000 matching entries"
    log_mod = module("_log", impl)
    log = log_mod.LogIndex()
    for term in range(1, 21):
        log.append(term, 100)
    terms = log.terms(1001, 2001)
    result = benchmark(log_mod.match_append, log, 1000, log.term_at(1000), terms, 0)
    assert result == (True, 0, N)


@pytest.mark.parametrize("impl", IMPLS)
def test_encode_1000(benchmark, impl: str) -> None:
    """The leader encodes 1000 payloads into records and wraps them in an AppendEntries frame."""
    benchmark.group = "encode: 1000 x 100 B records + raft frame"
    codec = module("_codec", impl)
    frame = benchmark(raft_frame, codec)
    assert len(frame) == 5 + 70 + N * 117


@pytest.mark.parametrize("impl", IMPLS)
def test_decode_1000(benchmark, impl: str) -> None:
    """A follower decodes the AppendEntries frame: header checks, field parsing, 1000 record CRCs."""
    benchmark.group = "decode: raft frame of 1000 x 100 B records"
    codec = module("_codec", impl)
    frame = raft_frame(codec)
    (decoded,) = benchmark(lambda: codec.FrameDecoder().feed(frame))
    assert len(decoded[-1]) == N


@pytest.mark.parametrize("impl", IMPLS)
def test_items_1000(benchmark, impl: str) -> None:
    """The (key, record) pairs for LMDB putmulti of a 1000-record batch."""
    benchmark.group = "RecordBatch.items: 1000 records"
    codec = module("_codec", impl)
    batch = codec.RecordBatch.encode(7, codec.KIND_DATA, PAYLOADS)
    assert len(benchmark(batch.items, 1)) == N


@pytest.mark.parametrize("voters", [3, 5, 7])
@pytest.mark.parametrize("impl", IMPLS)
def test_quorum_commit(benchmark, impl: str, voters: int) -> None:
    """The commit index over one match index per voter (a list, as the progress tracker keeps them)."""
    benchmark.group = f"quorum_commit: {voters} voters"
    log_mod = module("_log", impl)
    matches = [1000 + 37 * i % 11 for i in range(voters)]
    assert benchmark(log_mod.quorum_commit, matches) == sorted(matches, reverse=True)[voters // 2]


@pytest.mark.parametrize("impl", IMPLS)
def test_quorum_commit_array(benchmark, impl: str) -> None:
    """The commit index over 5 match indexes held in an array('Q')."""
    benchmark.group = "quorum_commit: 5 voters, array('Q')"
    log_mod = module("_log", impl)
    matches = array("Q", [10, 12, 9, 15, 11])
    assert benchmark(log_mod.quorum_commit, matches) == 11
