"""RecordBatch.find_kind, on both implementations, and Cython against the pure twin."""
from __future__ import annotations

import random
from types import ModuleType


def batch_of(codec: ModuleType, kinds: list[int]):  # noqa: ANN201
    return codec.RecordBatch.concat([codec.RecordBatch.encode(1, k, [bytes([i % 256]) * (i % 7)])
                                     for i, k in enumerate(kinds)]) if kinds else codec.RecordBatch(b"")


def test_find_kind(codec_mod: ModuleType) -> None:
    b = batch_of(codec_mod, [0, 0, 0, 2, 0, 2])
    assert b.find_kind(2) == 3
    assert b.find_kind(2, 4) == 5
    assert b.find_kind(2, 6) == -1
    assert b.find_kind(2, -5) == 3
    assert b.find_kind(1) == -1
    assert b.find_kind(0) == 0
    assert b.slice(4, 6).find_kind(2) == 1
    assert batch_of(codec_mod, []).find_kind(0) == -1


def test_find_kind_matches_the_twin(both_codec: tuple[ModuleType, ModuleType]) -> None:
    cy, py = both_codec
    rng = random.Random(5)
    for _ in range(200):
        kinds = [rng.choice([0, 0, 0, 1, 2, 3]) for _ in range(rng.randrange(0, 40))]
        a, b = batch_of(cy, kinds), batch_of(py, kinds)
        lo = rng.randrange(0, len(kinds) + 1)
        hi = rng.randrange(lo, len(kinds) + 1)
        a, b = a.slice(lo, hi), b.slice(lo, hi)
        for kind in range(4):
            for start in (-1, 0, 1, rng.randrange(0, len(kinds) + 2)):
                assert a.find_kind(kind, start) == b.find_kind(kind, start)
