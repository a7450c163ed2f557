"""LmdbStorage.save against a raw py-lmdb putmulti(append=True) of the same record bytes.

Run: python -m pytest bench/test_bench_storage.py --benchmark-only
Summary table: add --benchmark-json=FILE, then python bench/storage_report.py FILE.

Each round appends one batch of 100-byte payloads at the next index and stores a 24-byte
hard state, in one write transaction, with sync on (fsync per commit) and off. The raw
baseline does the least any LMDB log can do for the same batch: pack the keys, putmulti the
records already in memory, put the hard state, commit. The gap to it is LmdbStorage's own
cost: range checks, RecordBatch.items(), the cached-state update.
"""
from __future__ import annotations

import statistics
import struct
import time

import lmdb
import pytest

from raftlog.core.messages import HardState
from raftlog.hot import IMPLEMENTATION, KIND_DATA, RecordBatch
from raftlog.storage.lmdb import LmdbStorage

BATCHES = [1, 16, 256, 4096]
PAYLOAD = 100
MAP_SIZE = 1 << 30          # big enough that no round grows the map
_KEY = struct.Struct(">Q")
_HARD = struct.Struct(">QQQ")


def rounds_for(n: int) -> int:
    """Enough rounds for a stable median without writing more than ~400k entries per case."""
    return max(60, min(500, 400_000 // n))


def make_batch(n: int) -> RecordBatch:
    return RecordBatch.encode(1, KIND_DATA, [bytes([i % 251]) * PAYLOAD for i in range(n)])


# One test, its cases ordered so each LmdbStorage case runs right beside its raw baseline:
# the machine's load drifts, and adjacent runs see the same drift.
CASES = [(n, sync, impl) for sync in (True, False) for n in BATCHES for impl in ("LmdbStorage", "raw")]


@pytest.mark.parametrize("n,sync,impl", CASES, ids=[f"{n}-{'sync' if s else 'nosync'}-{i}" for n, s, i in CASES])
def test_save(benchmark, tmp_path, n, sync, impl):
    benchmark.group = f"save {n:>4} x {PAYLOAD} B, {'sync' if sync else 'nosync'}"
    benchmark.extra_info.update(entries=n, impl=impl, sync=sync, hot=IMPLEMENTATION)
    save, close = (storage_saver if impl == "LmdbStorage" else raw_saver)(tmp_path, n, sync)
    try:
        benchmark.pedantic(save, rounds=rounds_for(n), iterations=1, warmup_rounds=3)
    finally:
        close()


PAIRS = [(n, sync) for sync in (True, False) for n in BATCHES]


@pytest.mark.parametrize("n,sync", PAIRS, ids=[f"{n}-{'sync' if s else 'nosync'}" for n, s in PAIRS])
def test_save_paired(benchmark, tmp_path, n, sync):
    """Both saves alternately in each round: the ratio of their medians is immune to load drift."""
    benchmark.group = f"paired {n:>4} x {PAYLOAD} B, {'sync' if sync else 'nosync'}"
    ours, close_ours = storage_saver(tmp_path, n, sync)
    raw, close_raw = raw_saver(tmp_path, n, sync)
    times: dict[str, list[float]] = {"LmdbStorage": [], "raw": []}
    clock = time.perf_counter

    def pair() -> None:
        t0 = clock()
        ours()
        t1 = clock()
        raw()
        times["LmdbStorage"].append(t1 - t0)
        times["raw"].append(clock() - t1)

    try:
        benchmark.pedantic(pair, rounds=rounds_for(n), iterations=1, warmup_rounds=3)
    finally:
        close_ours()
        close_raw()
    med = {k: statistics.median(v) for k, v in times.items()}
    benchmark.extra_info.update(entries=n, impl="paired", sync=sync, hot=IMPLEMENTATION,
                                ours_median=med["LmdbStorage"], raw_median=med["raw"],
                                ratio=med["LmdbStorage"] / med["raw"])


def storage_saver(tmp_path, n: int, sync: bool):
    """LmdbStorage.save of one batch at the next index, with a hard state."""
    records = make_batch(n)
    storage = LmdbStorage.open(tmp_path / "node", node_id=1, cluster_id="bench", sync=sync, map_size=MAP_SIZE)

    def save() -> None:
        last = storage.last_index()
        storage.save(first_index=last + 1, records=records, hard_state=HardState(1, 1, last))

    return save, storage.close


def raw_saver(tmp_path, n: int, sync: bool):
    """The same batch and hard state with plain py-lmdb: pack keys, putmulti(append=True), put, commit."""
    values = [bytes(make_batch(n).record(i)) for i in range(n)]      # the same record bytes
    env = lmdb.open(str(tmp_path / "raw"), subdir=True, max_dbs=4, map_size=MAP_SIZE, sync=sync, metasync=sync)
    log_db = env.open_db(b"log")
    meta_db = env.open_db(b"meta")
    state = {"last": 0}
    pack = _KEY.pack

    def save() -> None:
        first = state["last"] + 1
        items = list(zip([pack(i) for i in range(first, first + n)], values))
        with env.begin(write=True) as txn:
            consumed, added = txn.cursor(log_db).putmulti(items, append=True)
            assert (consumed, added) == (n, n)
            txn.put(b"hard_state", _HARD.pack(1, 1, first - 1), db=meta_db)
        state["last"] = first + n - 1

    return save, env.close
