"""What only LmdbStorage does: identity and format checks, corruption detection, map growth,
readonly inspection beside a writer, sync modes, the writer lock; and a differential run
against MemoryStorage."""
from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import lmdb
import pytest

from raftlog.core.messages import ConfState, HardState, SnapshotMeta
from raftlog.errors import Closed, CorruptLogError, IdentityMismatch, RaftlogError
from raftlog.hot import KIND_DATA, RecordBatch
from raftlog.core.storage import MemoryStorage
from raftlog.storage.lmdb import FORMAT_VERSION, LmdbStorage

KEY = struct.Struct(">Q")


def batch(term: int, n: int, tag: str = "e", size: int = 0) -> RecordBatch:
    """n records of `term`; payloads name batch and position, padded to `size` bytes."""
    return RecordBatch.encode(term, KIND_DATA, [f"{tag}-{i}".encode().ljust(size, b".") for i in range(n)])


def open_node(path: Path, node_id: int = 1, cluster_id: str = "alpha", **kw) -> LmdbStorage:
    return LmdbStorage.open(path, node_id=node_id, cluster_id=cluster_id, **kw)


def raw_env(path: Path) -> lmdb.Environment:
    """The data dir opened with plain py-lmdb, to tamper with it behind LmdbStorage's back."""
    return lmdb.open(str(path), subdir=True, max_dbs=4)


# ---------------------------------------------------------------- identity and format

def test_new_dir_records_identity(tmp_path):
    with open_node(tmp_path / "n", node_id=3, cluster_id="alpha") as s:
        ident = s.identity()
        assert (ident.node_id, ident.cluster_id) == (3, "alpha")
        assert ident.created_at
    with open_node(tmp_path / "n", node_id=3, cluster_id="alpha") as s:
        assert s.identity() == ident


def test_other_node_id_is_refused(tmp_path):
    open_node(tmp_path / "n", node_id=1).close()
    with pytest.raises(IdentityMismatch) as err:
        open_node(tmp_path / "n", node_id=2)
    assert "node id 1" in str(err.value) and "expected 2" in str(err.value)


def test_other_cluster_id_is_refused(tmp_path):
    open_node(tmp_path / "n", cluster_id="alpha").close()
    with pytest.raises(IdentityMismatch) as err:
        open_node(tmp_path / "n", cluster_id="beta")
    assert "'alpha'" in str(err.value) and "'beta'" in str(err.value)


def test_both_ids_wrong_names_both(tmp_path):
    open_node(tmp_path / "n", node_id=1, cluster_id="alpha").close()
    with pytest.raises(IdentityMismatch) as err:
        open_node(tmp_path / "n", node_id=7, cluster_id="beta")
    msg = str(err.value)
    assert all(part in msg for part in ("node id 1", "expected 7", "'alpha'", "'beta'"))


def test_refused_open_releases_the_dir(tmp_path):
    open_node(tmp_path / "n").close()
    with pytest.raises(IdentityMismatch):
        open_node(tmp_path / "n", node_id=2)
    open_node(tmp_path / "n").close()      # neither the lock nor the environment leaked


def test_unknown_format_is_refused(tmp_path):
    open_node(tmp_path / "n").close()
    env = raw_env(tmp_path / "n")
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"format", b"99")
    env.close()
    with pytest.raises(IdentityMismatch) as err:
        open_node(tmp_path / "n")
    assert "'99'" in str(err.value) and str(FORMAT_VERSION) in str(err.value)


def test_foreign_lmdb_dir_is_refused(tmp_path):
    env = lmdb.open(str(tmp_path / "n"), max_dbs=4)
    with env.begin(write=True) as txn:
        txn.put(b"hello", b"world")
    env.close()
    env = raw_env(tmp_path / "n")
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"something", b"else")
    env.close()
    with pytest.raises(IdentityMismatch):
        open_node(tmp_path / "n")


def test_missing_dir_without_create(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_node(tmp_path / "absent", create=False)
    with pytest.raises(FileNotFoundError):
        LmdbStorage.open(tmp_path / "absent", node_id=None, cluster_id=None, readonly=True)
    assert not (tmp_path / "absent").exists()


def test_creating_needs_an_identity(tmp_path):
    with pytest.raises(ValueError):
        LmdbStorage.open(tmp_path / "n", node_id=None, cluster_id="alpha")
    with pytest.raises(ValueError):
        LmdbStorage.open(tmp_path / "m", node_id=0, cluster_id="alpha")


def test_none_ids_accept_the_stored_identity(tmp_path):
    open_node(tmp_path / "n", node_id=5, cluster_id="gamma").close()
    with LmdbStorage.open(tmp_path / "n", node_id=None, cluster_id=None) as s:
        assert (s.identity().node_id, s.identity().cluster_id) == (5, "gamma")


def test_second_writer_is_refused(tmp_path):
    with open_node(tmp_path / "n"):
        with pytest.raises(RaftlogError, match="already open"):
            open_node(tmp_path / "n")


# ---------------------------------------------------------------- corruption

def _tamper(path: Path, index: int, offset: int) -> None:
    """Flip one byte of the stored record of entry `index`."""
    env = raw_env(path)
    db = env.open_db(b"log")
    with env.begin(write=True, db=db) as txn:
        value = bytearray(txn.get(KEY.pack(index)))
        value[offset] ^= 0x40
        txn.put(KEY.pack(index), bytes(value))
    env.close()


@pytest.mark.parametrize("offset", [0, 7, 8, 10, 16, 17, 20], ids=lambda o: f"byte{o}")
def test_flipped_byte_names_the_entry(tmp_path, offset):
    with open_node(tmp_path / "n") as s:
        s.save(first_index=1, records=batch(1, 10, size=8))
    _tamper(tmp_path / "n", 7, offset)
    with open_node(tmp_path / "n") as s:
        assert len(s.records(1, 7)) == 6            # the entries before it still read
        assert len(s.records(8, 11)) == 3           # and those after it
        with pytest.raises(CorruptLogError) as err:
            s.records(1, 11)
        assert err.value.index == 7
        with pytest.raises(CorruptLogError) as err:
            s.records(7, 8)
        assert err.value.index == 7
        with pytest.raises(CorruptLogError) as err:
            s.log_index()
        assert err.value.index == 7


def test_failed_reads_release_their_reader_slots(tmp_path):
    """A CRC failure must not leak LMDB reader slots (126 per env): 3 x 200 failed reads on the
    calling thread, a thread pool and short-lived threads, then the env still reads."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    with open_node(tmp_path / "n") as s:
        s.save(first_index=1, records=batch(1, 10, size=8))
    _tamper(tmp_path / "n", 5, 17)
    failures = []

    def read_corrupt() -> None:
        try:
            s.records(1, 11)
        except CorruptLogError as exc:
            failures.append(exc.index)
    with open_node(tmp_path / "n") as s:
        for _ in range(200):
            read_corrupt()
        with ThreadPoolExecutor(8) as pool:
            for _ in range(200):
                pool.submit(read_corrupt).result()
        for _ in range(200):
            t = threading.Thread(target=read_corrupt)
            t.start()
            t.join()
        assert failures == [5] * 600
        assert len(s.records(1, 5)) == 4
        assert "no active readers" in s._env.readers()


def test_corruption_after_compaction_names_the_entry(tmp_path):
    with open_node(tmp_path / "n") as s:
        s.save(first_index=1, records=batch(1, 30, size=8))
        s.compact(SnapshotMeta(10, 1))
    _tamper(tmp_path / "n", 25, 19)
    with open_node(tmp_path / "n") as s:
        with pytest.raises(CorruptLogError) as err:
            s.records(11, 31)
        assert err.value.index == 25


def test_gap_in_log_is_detected_on_open(tmp_path):
    with open_node(tmp_path / "n") as s:
        s.save(first_index=1, records=batch(1, 10))
    env = raw_env(tmp_path / "n")
    with env.begin(write=True, db=env.open_db(b"log")) as txn:
        txn.delete(KEY.pack(4))
    env.close()
    with pytest.raises(CorruptLogError):
        open_node(tmp_path / "n")


# ---------------------------------------------------------------- map growth

def test_tiny_map_grows_and_loses_nothing(tmp_path):
    with open_node(tmp_path / "n", map_size=64 << 10, sync=False) as s:
        start = s.stats()["map_size"]
        last = 0
        for round_ in range(300):
            b = batch(1 + round_ // 50, 16, f"r{round_}", size=100)
            s.save(first_index=last + 1, records=b, hard_state=HardState(1 + round_ // 50, 1, last))
            last += 16
        assert s.stats()["map_size"] > start
        assert s.last_index() == last
    with open_node(tmp_path / "n") as s:
        assert s.last_index() == 300 * 16
        assert s.hard_state() == HardState(6, 1, 299 * 16)
        got = s.records(1, last + 1)
        assert len(got) == last
        assert got.payload(0).startswith(b"r0-0") and got.payload(last - 1).startswith(b"r299-15")
        assert len(s.log_index()) == last


def test_one_batch_bigger_than_the_map(tmp_path):
    big = batch(1, 4000, "big", size=500)             # about 2 MiB into a 64 KiB map
    with open_node(tmp_path / "n", map_size=64 << 10) as s:
        s.save(first_index=1, records=big, hard_state=HardState(1, 1, 0))
        assert s.stats()["map_size"] >= big.nbytes
        assert bytes(s.records(1, 4001).buffer) == bytes(big.buffer)
    with open_node(tmp_path / "n", map_size=64 << 10) as s:
        assert s.last_index() == 4000
        assert bytes(s.records(1, 4001).buffer) == bytes(big.buffer)


def test_compact_and_truncate_in_a_tiny_map(tmp_path):
    with open_node(tmp_path / "n", map_size=64 << 10) as s:
        s.save(first_index=1, records=batch(1, 2000, size=100))
        s.compact(SnapshotMeta(1500, 1))
        s.save(truncate_from=1800, first_index=1800, records=batch(2, 3000, "t", size=100))
        assert (s.first_index(), s.last_index()) == (1501, 4799)
        assert len(s.log_index()) == 3299


# ---------------------------------------------------------------- readonly beside a writer

READER = textwrap.dedent("""
    import json, sys
    from raftlog.storage.lmdb import LmdbStorage
    # A map smaller than the writer's will be: the reader must adopt the grown map.
    s = LmdbStorage.open(sys.argv[1], node_id=None, cluster_id=None, readonly=True, map_size=64 << 10)
    for line in sys.stdin:
        first, last = s.first_index(), s.last_index()
        n = len(s.records(first, last + 1)) if last >= first else 0
        out = {"first": first, "last": last, "n": n, "hard": list(s.hard_state()),
               "log": s.log_index().last_index, "map": s.stats()["map_size"], "id": s.identity().node_id}
        try:
            s.save(hard_state=s.hard_state())
            out["save"] = "allowed"
        except PermissionError:
            out["save"] = "refused"
        print(json.dumps(out), flush=True)
""")


def test_readonly_inspection_beside_a_writer(tmp_path):
    path = tmp_path / "n"
    writer = open_node(path, node_id=4, map_size=64 << 10)
    writer.save(first_index=1, records=batch(1, 10, size=50), hard_state=HardState(1, 4, 10))
    files_before = sorted(os.listdir(path))
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        def ask() -> dict:
            reader.stdin.write("?\n")
            reader.stdin.flush()
            return json.loads(reader.stdout.readline())

        seen = ask()
        assert (seen["first"], seen["last"], seen["n"], seen["log"], seen["id"]) == (1, 10, 10, 10, 4)
        assert seen["hard"] == [1, 4, 10] and seen["save"] == "refused"
        # The writer keeps going and grows its map past the reader's: the reader adopts it.
        last = 10
        for _ in range(40):
            writer.save(first_index=last + 1, records=batch(2, 50, size=100), hard_state=HardState(2, 4, last))
            last += 50
        writer.compact(SnapshotMeta(5, 1))
        seen = ask()
        assert (seen["first"], seen["last"], seen["n"], seen["log"]) == (6, last, last - 5, last)
        assert seen["hard"] == [2, 4, last - 50]
        assert seen["map"] == writer.stats()["map_size"] > 64 << 10
    finally:
        reader.stdin.close()
        assert reader.wait(timeout=30) == 0
        writer.close()
    assert sorted(os.listdir(path)) == files_before


def test_readonly_refuses_writes(tmp_path):
    open_node(tmp_path / "n").close()
    with LmdbStorage.open(tmp_path / "n", node_id=1, cluster_id="alpha", readonly=True) as s:
        assert s.readonly
        with pytest.raises(PermissionError):
            s.save(first_index=1, records=batch(1, 1))
        with pytest.raises(PermissionError):
            s.compact(SnapshotMeta(1, 1))
    with pytest.raises(IdentityMismatch):
        LmdbStorage.open(tmp_path / "n", node_id=2, cluster_id="alpha", readonly=True)


# ---------------------------------------------------------------- sync modes, lifecycle

def test_sync_false_works(tmp_path):
    with open_node(tmp_path / "n", sync=False) as s:
        assert not s.sync
        for k in range(20):
            s.save(first_index=k * 5 + 1, records=batch(1, 5, f"k{k}"), hard_state=HardState(1, 1, k * 5))
        s.flush()
    with open_node(tmp_path / "n") as s:
        assert s.sync
        assert s.last_index() == 100 and s.hard_state() == HardState(1, 1, 95)
        assert s.records(100, 101).payload(0) == b"k19-4"


def test_closed_storage_refuses_work(tmp_path):
    s = open_node(tmp_path / "n")
    s.save(first_index=1, records=batch(1, 2))
    s.close()
    s.close()                                   # idempotent
    with pytest.raises(Closed):
        s.records(1, 2)
    with pytest.raises(Closed):
        s.save(first_index=3, records=batch(1, 1))
    with pytest.raises(Closed):
        s.log_index()


def test_snapshot_file_is_recorded(tmp_path):
    conf = ConfState(voters=(1, 2, 3))
    with open_node(tmp_path / "n") as s:
        s.save(first_index=1, records=batch(1, 5))
        s.compact(SnapshotMeta(3, 1, conf), file="snap-1-3.bin")
        assert s.snapshot_file() == "snap-1-3.bin"
        assert s.snapshot_dir == os.path.join(s.path, "snapshots")
    with open_node(tmp_path / "n") as s:
        assert s.snapshot_meta() == SnapshotMeta(3, 1, conf)
        assert s.snapshot_file() == "snap-1-3.bin"


def test_stats(tmp_path):
    with open_node(tmp_path / "n", node_id=2, cluster_id="c") as s:
        s.save(first_index=1, records=batch(1, 7))
        s.compact(SnapshotMeta(2, 1))
        st = s.stats()
    assert (st["entries"], st["first_index"], st["last_index"], st["snapshot_index"]) == (5, 3, 7, 2)
    assert (st["node_id"], st["cluster_id"], st["format"]) == (2, "c", FORMAT_VERSION)
    assert st["used_bytes"] <= st["map_size"]


def test_abandoned_putmulti_leaves_no_trace(tmp_path):
    """A save whose append cannot complete (keys past last_index appear behind our back) writes nothing."""
    with open_node(tmp_path / "n") as s:
        s.save(first_index=1, records=batch(1, 3), hard_state=HardState(1, 1, 0))
        with s._env.begin(write=True) as txn:         # simulate a foreign writer
            txn.put(KEY.pack(6), b"x", db=s._log_db)
        with pytest.raises(CorruptLogError):
            s.save(first_index=4, records=batch(1, 5), hard_state=HardState(9, 9, 9))
        assert s.last_index() == 3 and s.hard_state() == HardState(1, 1, 0)
        with s._env.begin(buffers=False) as txn:
            assert txn.get(KEY.pack(4), db=s._log_db) is None
            assert txn.get(b"hard_state", db=s._meta_db) == struct.pack(">QQQ", 1, 1, 0)


# ---------------------------------------------------------------- differential

def test_random_operations_match_memory_storage(tmp_path):
    rng = random.Random(1234)
    mem = MemoryStorage()
    disk = open_node(tmp_path / "n", sync=False, map_size=64 << 10)
    term = 1
    try:
        for step in range(400):
            op = rng.random()
            last, first = mem.last_index(), mem.first_index()
            if op < 0.5:
                b = batch(term, rng.randint(1, 40), f"s{step}", size=rng.randint(0, 200))
                kw = dict(first_index=last + 1, records=b, hard_state=HardState(term, 1, max(0, first - 1)))
            elif op < 0.7 and last >= first:
                term += 1
                cut = rng.randint(first, last + 1)
                kw = dict(truncate_from=cut, first_index=cut, records=batch(term, rng.randint(0, 10), f"t{step}"))
            elif op < 0.78 and last >= first:
                index = rng.randint(first - 1, last + rng.choice([0, 0, 0, 5]))
                snap = SnapshotMeta(index, term if index > last else mem.log_index().term_at(min(index, last)))
                mem.compact(snap)
                disk.compact(snap)
                continue
            elif op < 0.85:
                kw = dict(conf_state=ConfState(voters=tuple(range(1, rng.randint(2, 6)))))
            else:
                kw = dict(first_index=rng.randint(0, last + 3), records=batch(term, 2))
            outcomes = []
            for s in (mem, disk):
                try:
                    s.save(**kw)
                    outcomes.append("ok")
                except IndexError:
                    outcomes.append("IndexError")
            assert outcomes[0] == outcomes[1], (step, kw)
            assert (mem.first_index(), mem.last_index(), mem.hard_state(), mem.conf_state(), mem.snapshot_meta()) == \
                (disk.first_index(), disk.last_index(), disk.hard_state(), disk.conf_state(), disk.snapshot_meta())
            lo = mem.first_index()
            hi = mem.last_index() + 1
            if hi > lo:
                a, b = rng.randint(lo, hi), rng.randint(lo, hi)
                a, b = min(a, b), max(a, b)
                mb = rng.choice([None, 0, 500, 5000])
                assert bytes(mem.records(a, b, mb).buffer) == bytes(disk.records(a, b, mb).buffer)
        ml, dl = mem.log_index(), disk.log_index()
        assert ((ml.snapshot_index, ml.snapshot_term, ml.last_index)
                == (dl.snapshot_index, dl.snapshot_term, dl.last_index))
        assert list(ml.terms(ml.first_index, ml.last_index + 1)) == list(dl.terms(dl.first_index, dl.last_index + 1))
    finally:
        disk.close()
    with open_node(tmp_path / "n") as again:
        assert (again.first_index(), again.last_index()) == (mem.first_index(), mem.last_index())
        if mem.last_index() >= mem.first_index():
            assert bytes(again.records(mem.first_index(), mem.last_index() + 1).buffer) == \
                bytes(mem.records(mem.first_index(), mem.last_index() + 1).buffer)


# ---------------------------------------------------------------- a reader thread beside the writer

def test_read_racing_a_compaction_is_an_index_error(tmp_path):
    """A reader that saw the state just before a compaction gets IndexError, not CorruptLogError."""
    with open_node(tmp_path / "n") as s:
        s.save(first_index=1, records=batch(1, 10))
        before = s._state
        s.compact(SnapshotMeta(6, 1))
        s._state = before                      # the window between reading the state and the txn
        with pytest.raises(IndexError, match="no longer held"):
            s.records(2, 5)
        with pytest.raises(IndexError, match="no longer held"):
            s.records(5, 9)
        s.compact(SnapshotMeta(10, 1))
        s._state = before
        with pytest.raises(IndexError, match="now empty"):
            s.records(8, 10)


def test_reader_thread_beside_writer_thread(tmp_path):
    """Reads from one thread while another appends, grows the map and compacts: always whole, checked batches."""
    import threading

    s = open_node(tmp_path / "n", sync=False, map_size=64 << 10)
    done = threading.Event()
    failures: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        while not done.is_set():
            first, last = s.first_index(), s.last_index()
            if last < first:
                continue
            try:
                got = s.records(first, last + 1, max_bytes=64 << 10)
                assert len(got) >= 1 and got.term(0) >= 1
                reads[0] += 1
            except IndexError:
                pass                           # compacted under us: allowed
            except BaseException as exc:       # noqa: BLE001 - reported below
                failures.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        last = 0
        for k in range(300):
            s.save(first_index=last + 1, records=batch(1, 20, f"w{k}", size=100))
            last += 20
            if k % 25 == 24:
                s.compact(SnapshotMeta(last - 100, 1))
    finally:
        done.set()
        thread.join()
        s.close()
    assert not failures, failures[0]
    assert reads[0] > 0
