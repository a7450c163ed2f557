"""Snapshot storage: files written durably, compaction with a retained tail, InstallSnapshot on the receiving side.

Every case runs on MemoryStorage and on LmdbStorage (which is also reopened, to check
that what it reports survives a restart).
"""
from __future__ import annotations

import os
import zlib

import pytest

from raftlog.core.messages import ConfState, HardState, SnapshotMeta
from raftlog.errors import CorruptLogError
from raftlog.hot import KIND_DATA, RecordBatch
from raftlog.core.storage import MemoryStorage
from raftlog.storage.lmdb import LmdbStorage

CONF = ConfState((1, 2, 3))


class Lmdb:
    """Opens (and reopens) an LmdbStorage in a temp dir."""

    def __init__(self, path: str) -> None:
        self.path = path

    def open(self) -> LmdbStorage:
        return LmdbStorage.open(self.path, node_id=1, cluster_id="t")


@pytest.fixture(params=["memory", "lmdb"])
def kind(request, tmp_path):
    return request.param, Lmdb(str(tmp_path / "d"))


def fresh(kind):
    name, lm = kind
    return MemoryStorage() if name == "memory" else lm.open()


def reopen(kind, st):
    name, lm = kind
    if name == "memory":
        return st
    st.close()
    return lm.open()


def fill(st, n: int, term: int = 1) -> None:
    st.save(hard_state=HardState(term, 1, n), first_index=st.last_index() + 1,
            records=RecordBatch.encode(term, KIND_DATA,
                                       [b"e%d" % i for i in range(st.last_index() + 1, st.last_index() + n + 1)]))


def test_save_snapshot_then_compact_keeps_a_tail(kind) -> None:
    st = fresh(kind)
    fill(st, 100)
    meta = st.save_snapshot(SnapshotMeta(80, 1, CONF), b"state at 80")
    assert (meta.size, meta.crc32) == (11, zlib.crc32(b"state at 80"))
    assert st.first_index() == 1                       # recording a snapshot drops nothing
    st.compact_log(70)                                 # keep a tail of 10 below the snapshot
    st = reopen(kind, st)
    assert st.snapshot_meta() == meta
    assert (st.first_index(), st.last_index()) == (71, 100)
    idx = st.log_index()
    assert (idx.first_index, idx.last_index, idx.term_at(70)) == (71, 100, 1)
    assert st.records(71, 73).entries(71)[0][3] == b"e71"
    with pytest.raises(IndexError):
        st.records(70, 71)
    assert st.snapshot_data() == b"state at 80"
    assert st.snapshot_chunk(80, 6, 100) == b"at 80"
    with pytest.raises(IndexError):
        st.compact_log(81)                             # never past the snapshot
    fill(st, 5)
    assert st.last_index() == 105
    st.close()


def test_previous_snapshot_stays_readable_older_ones_go(kind) -> None:
    st = fresh(kind)
    fill(st, 30)
    st.save_snapshot(SnapshotMeta(10, 1, CONF), b"ten")
    st.save_snapshot(SnapshotMeta(20, 1, CONF), b"twenty")
    assert st.snapshot_chunk(10, 0, 10) == b"ten"      # a transfer of 10 may still be running
    st.save_snapshot(SnapshotMeta(30, 1, CONF), b"thirty")
    with pytest.raises(LookupError):
        st.snapshot_chunk(10, 0, 10)
    assert st.snapshot_chunk(20, 0, 10) == b"twenty"
    assert st.save_snapshot(SnapshotMeta(25, 1, CONF), b"old").index == 30    # older: ignored
    if kind[0] == "lmdb":
        names = sorted(os.listdir(st.snapshot_dir))
        assert names == ["snap-0000000000000020-1.bin", "snap-0000000000000030-1.bin"]
    st.close()


def test_receive_chunks_resume_after_reopen_and_install(kind) -> None:
    st = fresh(kind)
    fill(st, 5)
    data = bytes(range(256)) * 10
    meta = SnapshotMeta(500, 3, ConfState((1, 2, 3, 4)), len(data), zlib.crc32(data))
    st.write_snapshot_chunk(meta, 0, data[:1000])
    st = reopen(kind, st)
    held = st.incoming_snapshot()
    assert held == (meta, 1000, zlib.crc32(data[:1000]))
    with pytest.raises(IndexError):
        st.write_snapshot_chunk(meta, 1500, data[1500:])          # a gap
    st.write_snapshot_chunk(meta, 1000, data[1000:])
    st.install_snapshot(meta)
    st = reopen(kind, st)
    assert st.snapshot_meta() == meta and st.incoming_snapshot() is None
    assert (st.first_index(), st.last_index()) == (501, 500)
    assert st.snapshot_data() == data
    assert st.conf_state() == meta.conf_state
    fill(st, 3, term=3)
    assert st.records(501, 504).entries(501)[2][3] == b"e503"
    st.close()


def test_install_refuses_a_snapshot_that_fails_its_checksum(kind) -> None:
    st = fresh(kind)
    fill(st, 5)
    data = b"x" * 100
    meta = SnapshotMeta(50, 1, CONF, len(data), zlib.crc32(data) ^ 0xFF)
    st.write_snapshot_chunk(meta, 0, data)
    with pytest.raises(CorruptLogError):
        st.install_snapshot(meta)
    assert (st.first_index(), st.last_index()) == (1, 5)          # the log is untouched
    st.close()


def test_lmdb_compaction_runs_in_bounded_transactions(tmp_path) -> None:
    st = LmdbStorage.open(str(tmp_path / "d"), node_id=1, cluster_id="t")
    fill(st, 1000)
    st.save_snapshot(SnapshotMeta(900, 1, CONF), b"s")
    st.compact_log(900, batch=64)
    assert st.first_index() == 901 and st.stats()["entries"] == 100
    st.close()
    st = LmdbStorage.open(str(tmp_path / "d"), node_id=1, cluster_id="t")
    assert st.first_index() == 901 and st.log_index().term_at(900) == 1
    st.close()


def test_lmdb_a_crashed_snapshot_write_leaves_the_old_one_current(tmp_path) -> None:
    """A failure mid-write (here: the data source raising) leaves no new file and the old snapshot current."""
    st = LmdbStorage.open(str(tmp_path / "d"), node_id=1, cluster_id="t")
    fill(st, 20)
    first = st.save_snapshot(SnapshotMeta(10, 1, CONF), b"ten")

    def broken():
        yield b"partial"
        raise OSError("disk gone")

    with pytest.raises(OSError):
        st.save_snapshot(SnapshotMeta(20, 1, CONF), broken())
    assert st.snapshot_meta() == first
    assert os.listdir(st.snapshot_dir) == ["snap-0000000000000010-1.bin"]
    st.close()
