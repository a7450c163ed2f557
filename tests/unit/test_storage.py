"""The Storage contract, run once against MemoryStorage and once against LmdbStorage.

Each case is written once; the `storage` fixture parametrizes it over both implementations
so they cannot drift. Ranges are half-open `[lo, hi)`.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from raftlog.core.messages import ConfState, HardState, SnapshotMeta
from raftlog.hot import KIND_DATA, KIND_NOOP, RecordBatch
from raftlog.core.storage import MemoryStorage
from raftlog.storage.lmdb import LmdbStorage


def batch(term: int, n: int, tag: str = "e", kind: int = KIND_DATA) -> RecordBatch:
    """n records of `term` whose payloads say which batch and position they are."""
    return RecordBatch.encode(term, kind, [f"{tag}-{i}".encode() for i in range(n)])


def payloads(storage, lo: int, hi: int, max_bytes=None) -> list[bytes]:
    """The payloads of entries [lo, hi)."""
    got = storage.records(lo, hi, max_bytes)
    return [got.payload(i) for i in range(len(got))]


def terms(storage) -> list[int]:
    """Every stored entry's term, via log_index."""
    log = storage.log_index()
    return list(log.terms(log.first_index, log.last_index + 1))


def open_lmdb(path: Path) -> LmdbStorage:
    return LmdbStorage.open(path, node_id=1, cluster_id="test")


@pytest.fixture(params=["memory", "lmdb"])
def storage(request, tmp_path):
    """A fresh, empty storage of each implementation."""
    s = MemoryStorage() if request.param == "memory" else open_lmdb(tmp_path / "node")
    yield s
    s.close()


@pytest.fixture
def lmdb_dir(tmp_path):
    return tmp_path / "node"


# ---------------------------------------------------------------- empty storage

def test_new_storage_is_empty(storage):
    assert storage.hard_state() == HardState(0, 0, 0)
    assert storage.conf_state() is None
    assert storage.snapshot_meta() == SnapshotMeta()
    assert storage.first_index() == 1
    assert storage.last_index() == 0
    log = storage.log_index()
    assert (log.first_index, log.last_index, len(log)) == (1, 0, 0)
    assert len(storage.records(1, 1)) == 0


# ---------------------------------------------------------------- append

def test_save_appends_records(storage):
    storage.save(first_index=1, records=batch(1, 5, "a"))
    assert storage.last_index() == 5
    assert payloads(storage, 1, 6) == [f"a-{i}".encode() for i in range(5)]
    storage.save(first_index=6, records=batch(2, 3, "b"))
    assert storage.last_index() == 8
    assert payloads(storage, 5, 9) == [b"a-4", b"b-0", b"b-1", b"b-2"]
    assert terms(storage) == [1] * 5 + [2] * 3


def test_records_keep_term_and_kind(storage):
    storage.save(first_index=1, records=RecordBatch.concat([batch(3, 1, "noop", KIND_NOOP), batch(3, 2, "d")]))
    got = storage.records(1, 4)
    assert [(got.term(i), got.kind(i)) for i in range(3)] == [(3, KIND_NOOP), (3, KIND_DATA), (3, KIND_DATA)]
    assert got.entries(1)[1] == (2, 3, KIND_DATA, b"d-0")


def test_records_are_byte_identical(storage):
    sent = batch(4, 10, "x")
    storage.save(first_index=1, records=sent)
    assert bytes(storage.records(1, 11).buffer) == bytes(sent.buffer)


def test_save_of_a_slice_stores_only_the_slice(storage):
    storage.save(first_index=1, records=batch(1, 10, "s").slice(3, 6))
    assert payloads(storage, 1, 4) == [b"s-3", b"s-4", b"s-5"]


def test_save_with_empty_batch_changes_nothing(storage):
    storage.save(first_index=1, records=batch(1, 2))
    storage.save(first_index=0, records=RecordBatch(b""))
    assert storage.last_index() == 2


def test_save_not_after_last_index_raises_and_writes_nothing(storage):
    storage.save(first_index=1, records=batch(1, 3), hard_state=HardState(1, 1, 0))
    for first in (1, 3, 5, 0):
        with pytest.raises(IndexError):
            storage.save(first_index=first, records=batch(2, 2), hard_state=HardState(9, 9, 9))
    assert storage.last_index() == 3
    assert storage.hard_state() == HardState(1, 1, 0)
    assert terms(storage) == [1, 1, 1]


def test_first_save_must_start_at_one(storage):
    with pytest.raises(IndexError):
        storage.save(first_index=2, records=batch(1, 1))
    assert storage.last_index() == 0


# ---------------------------------------------------------------- truncate

def test_truncate_then_append_replaces_suffix(storage):
    storage.save(first_index=1, records=batch(1, 6, "old"))
    storage.save(truncate_from=4, first_index=4, records=batch(2, 2, "new"))
    assert storage.last_index() == 5
    assert payloads(storage, 1, 6) == [b"old-0", b"old-1", b"old-2", b"new-0", b"new-1"]
    assert terms(storage) == [1, 1, 1, 2, 2]


def test_truncate_without_append(storage):
    storage.save(first_index=1, records=batch(1, 6))
    storage.save(truncate_from=3)
    assert storage.last_index() == 2
    with pytest.raises(IndexError):
        storage.records(1, 4)
    storage.save(first_index=3, records=batch(1, 1, "again"))
    assert payloads(storage, 3, 4) == [b"again-0"]


def test_truncate_whole_log(storage):
    storage.save(first_index=1, records=batch(1, 4))
    storage.save(truncate_from=1, first_index=1, records=batch(3, 2, "z"))
    assert storage.last_index() == 2
    assert terms(storage) == [3, 3]
    storage.save(truncate_from=1)
    assert storage.last_index() == 0
    assert len(storage.log_index()) == 0


def test_truncate_at_last_plus_one_is_a_noop(storage):
    storage.save(first_index=1, records=batch(1, 3))
    storage.save(truncate_from=4, first_index=4, records=batch(1, 1, "t"))
    assert storage.last_index() == 4
    assert payloads(storage, 4, 5) == [b"t-0"]


def test_truncate_out_of_range_raises(storage):
    storage.save(first_index=1, records=batch(1, 3))
    with pytest.raises(IndexError):
        storage.save(truncate_from=5)
    storage.compact(SnapshotMeta(2, 1))
    with pytest.raises(IndexError):
        storage.save(truncate_from=2)       # at or below the snapshot
    assert (storage.first_index(), storage.last_index()) == (3, 3)


def test_truncate_then_append_must_follow_truncation(storage):
    storage.save(first_index=1, records=batch(1, 5))
    with pytest.raises(IndexError):
        storage.save(truncate_from=3, first_index=6, records=batch(2, 1))
    assert storage.last_index() == 5


# ---------------------------------------------------------------- records ranges

def test_records_range_errors(storage):
    storage.save(first_index=1, records=batch(1, 5))
    for lo, hi in ((0, 2), (1, 7), (4, 3), (6, 7), (7, 7)):
        with pytest.raises(IndexError):
            storage.records(lo, hi)
    assert len(storage.records(6, 6)) == 0
    assert len(storage.records(3, 3)) == 0
    assert payloads(storage, 5, 6) == [b"e-4"]


def test_records_max_bytes(storage):
    one = batch(1, 1, "m").nbytes                 # every record below has this size
    storage.save(first_index=1, records=batch(1, 8, "m"))
    assert len(storage.records(1, 9, max_bytes=0)) == 1         # at least one
    assert len(storage.records(1, 9, max_bytes=one - 1)) == 1
    assert len(storage.records(1, 9, max_bytes=one)) == 1
    assert len(storage.records(1, 9, max_bytes=3 * one)) == 3
    assert len(storage.records(1, 9, max_bytes=3 * one + one - 1)) == 3
    assert len(storage.records(1, 9, max_bytes=100 * one)) == 8
    assert payloads(storage, 4, 9, max_bytes=2 * one) == [b"m-3", b"m-4"]
    assert len(storage.records(2, 4, max_bytes=100 * one)) == 2     # hi still bounds it


# ---------------------------------------------------------------- hard and conf state

def test_hard_state_and_conf_state(storage):
    storage.save(hard_state=HardState(2, 3, 0))
    assert storage.hard_state() == HardState(2, 3, 0)
    assert storage.conf_state() is None
    conf = ConfState(voters=(1, 2, 3), learners=(4,))
    storage.save(conf_state=conf, first_index=1, records=batch(2, 1))
    assert storage.conf_state() == conf
    assert storage.hard_state() == HardState(2, 3, 0)     # None keeps the previous one
    storage.save(hard_state=HardState(2, 3, 1))
    assert storage.hard_state() == HardState(2, 3, 1)
    assert storage.conf_state() == conf
    joint = ConfState(voters=(1, 2, 5), voters_outgoing=(1, 2, 3), learners_next=(3,), auto_leave=True)
    storage.save(conf_state=joint)
    assert storage.conf_state() == joint


def test_hard_state_with_big_numbers(storage):
    big = HardState((1 << 64) - 1, (1 << 63) + 5, 1 << 40)
    storage.save(hard_state=big)
    assert storage.hard_state() == big


# ---------------------------------------------------------------- compact

def test_compact_drops_prefix(storage):
    storage.save(first_index=1, records=RecordBatch.concat([batch(1, 4, "a"), batch(2, 4, "b")]))
    snap = SnapshotMeta(5, 2, ConfState(voters=(1, 2, 3)))
    storage.compact(snap)
    assert storage.snapshot_meta() == snap
    assert (storage.first_index(), storage.last_index()) == (6, 8)
    with pytest.raises(IndexError):
        storage.records(5, 7)
    assert payloads(storage, 6, 9) == [b"b-1", b"b-2", b"b-3"]
    log = storage.log_index()
    assert (log.snapshot_index, log.snapshot_term, log.last_index) == (5, 2, 8)
    assert log.term_at(5) == 2 and log.term_at(6) == 2
    storage.save(first_index=9, records=batch(3, 1, "c"))
    assert terms(storage) == [2, 2, 2, 3]


def test_compact_below_current_snapshot_is_ignored(storage):
    storage.save(first_index=1, records=batch(1, 6))
    storage.compact(SnapshotMeta(4, 1))
    storage.compact(SnapshotMeta(2, 1))
    storage.compact(SnapshotMeta(4, 1))
    assert storage.snapshot_meta().index == 4
    assert storage.first_index() == 5


def test_compact_to_last_and_beyond(storage):
    storage.save(first_index=1, records=batch(1, 3))
    storage.compact(SnapshotMeta(3, 1))
    assert (storage.first_index(), storage.last_index()) == (4, 3)
    assert len(storage.log_index()) == 0
    assert len(storage.records(4, 4)) == 0
    storage.compact(SnapshotMeta(10, 4))              # an installed snapshot past the log
    assert (storage.first_index(), storage.last_index()) == (11, 10)
    assert storage.log_index().last_term == 4
    with pytest.raises(IndexError):
        storage.save(first_index=4, records=batch(4, 1))
    storage.save(first_index=11, records=batch(5, 2, "after"))
    assert payloads(storage, 11, 13) == [b"after-0", b"after-1"]


def test_truncate_after_compact(storage):
    storage.save(first_index=1, records=batch(1, 8))
    storage.compact(SnapshotMeta(3, 1))
    storage.save(truncate_from=4, first_index=4, records=batch(2, 2, "n"))
    assert (storage.first_index(), storage.last_index()) == (4, 5)
    assert terms(storage) == [2, 2]


# ---------------------------------------------------------------- log_index

def test_log_index_follows_terms(storage):
    storage.save(first_index=1, records=RecordBatch.concat([batch(1, 3), batch(2, 1), batch(5, 4)]))
    log = storage.log_index()
    assert (log.last_index, log.last_term) == (8, 5)
    assert [log.term_at(i) for i in range(1, 9)] == [1, 1, 1, 2, 5, 5, 5, 5]
    assert log.first_index_of_term(7) == 5


def test_log_index_of_many_entries(storage):
    total = 0
    for term in range(1, 6):
        storage.save(first_index=total + 1, records=batch(term, 1000))
        total += 1000
    log = storage.log_index()
    assert log.last_index == 5000
    assert log.term_at(1) == 1 and log.term_at(1000) == 1 and log.term_at(1001) == 2 and log.term_at(5000) == 5


# ---------------------------------------------------------------- reopen (LMDB)

def test_reopen_keeps_everything(lmdb_dir):
    conf = ConfState(voters=(1, 2, 3))
    with open_lmdb(lmdb_dir) as s:
        s.save(first_index=1, records=batch(1, 10, "r"), hard_state=HardState(1, 2, 3), conf_state=conf)
        s.save(truncate_from=8, first_index=8, records=batch(2, 5, "q"), hard_state=HardState(2, 2, 7))
        s.compact(SnapshotMeta(4, 1, conf))
        before = (s.hard_state(), s.conf_state(), s.snapshot_meta(), s.first_index(), s.last_index(),
                  bytes(s.records(5, 13).buffer), terms(s))
    with open_lmdb(lmdb_dir) as s:
        after = (s.hard_state(), s.conf_state(), s.snapshot_meta(), s.first_index(), s.last_index(),
                 bytes(s.records(5, 13).buffer), terms(s))
        assert after == before
        assert after[3:5] == (5, 12)
        s.save(first_index=13, records=batch(2, 1, "more"))
    with open_lmdb(lmdb_dir) as s:
        assert s.last_index() == 13
        assert payloads(s, 12, 14) == [b"q-4", b"more-0"]


def test_reopen_after_compact_past_log(lmdb_dir):
    with open_lmdb(lmdb_dir) as s:
        s.save(first_index=1, records=batch(1, 3))
        s.compact(SnapshotMeta(20, 3))
    with open_lmdb(lmdb_dir) as s:
        assert (s.first_index(), s.last_index()) == (21, 20)
        assert s.log_index().term_at(20) == 3


def test_reopen_empty(lmdb_dir):
    open_lmdb(lmdb_dir).close()
    with open_lmdb(lmdb_dir) as s:
        assert (s.first_index(), s.last_index(), s.hard_state(), s.conf_state()) == (1, 0, HardState(), None)
