"""The incarnation book's durable part: Storage.incarnations / save_incarnations, on MemoryStorage and LmdbStorage."""
from __future__ import annotations

import pytest

from raftlog.core.storage import MemoryStorage
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
