"""The incarnation book's durable part: Storage.incarnations / save_incarnations, on MemoryStorage and LmdbStorage."""
from __future__ import annotations

import json

import lmdb
import pytest

from raftlog.core.storage import MemoryStorage
from raftlog.storage.datadir import MAX_DBS, META_DB
from raftlog.storage.lmdb import LmdbStorage


@pytest.fixture(params=["memory", "lmdb"])
def storage(request, tmp_path):
    s = MemoryStorage() if request.param == "memory" else LmdbStorage.open(tmp_path / "node", node_id=1,
                                                                            cluster_id="test")
    yield s
    s.close()


def test_a_new_storage_knows_no_incarnation(storage) -> None:
    assert storage.incarnations() == {}


def test_save_replaces_the_book(storage) -> None:
    storage.save_incarnations({2: 1 << 62, 3: 7})
    assert storage.incarnations() == {2: 1 << 62, 3: 7}
    storage.save_incarnations({3: 7})           # member 2 forgotten
    assert storage.incarnations() == {3: 7}


def test_the_book_survives_a_reopen(tmp_path) -> None:
    with LmdbStorage.open(tmp_path / "node", node_id=1, cluster_id="test") as s:
        s.save_incarnations({2: 12345, 3: 67890})
    with LmdbStorage.open(tmp_path / "node", node_id=1, cluster_id="test") as s:
        assert s.incarnations() == {2: 12345, 3: 67890}


def test_a_new_dir_gets_a_random_incarnation_that_stays(tmp_path) -> None:
    with LmdbStorage.open(tmp_path / "a", node_id=1, cluster_id="test") as a, \
            LmdbStorage.open(tmp_path / "b", node_id=1, cluster_id="test") as b:
        first = a.identity().incarnation
        assert first and first != b.identity().incarnation
    with LmdbStorage.open(tmp_path / "a", node_id=1, cluster_id="test") as a:
        assert a.identity().incarnation == first


def test_a_dir_made_before_incarnations_gets_one_at_its_first_writable_open(tmp_path) -> None:
    with LmdbStorage.open(tmp_path / "old", node_id=1, cluster_id="test") as s:
        s.save_incarnations({})                      # (any write: the env is open for writing)
    with lmdb.open(str(tmp_path / "old"), subdir=True, max_dbs=MAX_DBS) as env:   # as an older raftlog wrote it
        with env.begin(write=True) as txn:
            meta = env.open_db(META_DB, txn=txn, create=False)
            old = json.loads(txn.get(b"identity", db=meta))
            del old["incarnation"]
            txn.put(b"identity", json.dumps(old).encode(), db=meta)
    with LmdbStorage.open(tmp_path / "old", node_id=1, cluster_id="test") as s:
        given = s.identity().incarnation
    assert given
    with LmdbStorage.open(tmp_path / "old", node_id=1, cluster_id="test") as s:
        assert s.identity().incarnation == given
