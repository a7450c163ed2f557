"""Creating a data dir is atomic: a creation stopped at any step leaves a dir the next open creates again.

A dir whose creation was killed must never be taken for another program's LMDB environment
(data.mdb without raftlog's identity) nor for a damaged one (raftlog.lock without data.mdb):
nothing was stored in it yet. The process tier kills real creations at random moments
(tests/process/test_datadir.py); here each step is stopped on purpose.
"""
from __future__ import annotations

import os

import pytest

import raftlog
from raftlog.storage import datadir
from raftlog.storage.datadir import CREATING_DIR, DATA_FILE, LOCK_FILE
from raftlog.storage.lmdb import LmdbStorage


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no cleanup is trusted."""


def stop_at(monkeypatch: pytest.MonkeyPatch, name: str, target: object = os) -> None:
    def killed(*args: object, **kwargs: object) -> None:
        raise Killed(name)
    monkeypatch.setattr(target, name, killed)


@pytest.mark.parametrize("step", ["rename", "fsync_dir", "take_writer_lock", "lmdb_commit"])
def test_a_creation_stopped_at_any_step_is_created_again(tmp_path, monkeypatch, step):
    path = str(tmp_path / "node")
    with monkeypatch.context() as m:
        if step == "rename":
            stop_at(m, "rename", datadir.os)
        elif step == "fsync_dir":
            m.setattr(datadir, "fsync_dir", fsync_dir_stopping_after(1))
        elif step == "take_writer_lock":
            stop_at(m, "take_writer_lock", datadir)
        else:
            stop_at(m, "to_json", datadir.Identity)
        with pytest.raises(Killed):
            LmdbStorage.open(path, node_id=1, cluster_id="c")
    left = sorted(os.listdir(path))
    assert CREATING_DIR in left or DATA_FILE in left
    if DATA_FILE not in left:
        assert datadir.validate_data_dir(path) is None, "an interrupted creation is nothing yet"
    with LmdbStorage.open(path, node_id=1, cluster_id="c") as s:
        assert s.identity().node_id == 1 and s.last_index() == 0
    assert CREATING_DIR not in os.listdir(path)


def fsync_dir_stopping_after(calls: int):
    """datadir.fsync_dir that works `calls` times (creating.tmp/ made durable), then is killed (after the rename)."""
    real, done = datadir.fsync_dir, []

    def fsync_dir(path: str) -> None:
        if len(done) == calls:
            raise Killed("fsync_dir")
        done.append(path)
        real(path)
    return fsync_dir


def test_data_mdb_never_appears_without_the_identity(tmp_path, monkeypatch):
    """Stopped inside the first transaction, the dir holds no data.mdb: not another program's environment."""
    path = str(tmp_path / "node")
    stop_at(monkeypatch, "to_json", datadir.Identity)
    with pytest.raises(Killed):
        LmdbStorage.open(path, node_id=1, cluster_id="c")
    assert sorted(os.listdir(path)) == [CREATING_DIR, LOCK_FILE]


def test_leftovers_beside_a_created_dir_are_removed_and_its_data_kept(tmp_path):
    path = tmp_path / "node"
    with raftlog.open_sync(str(path)) as log:
        log.append(b"kept")
    (path / CREATING_DIR).mkdir()
    (path / CREATING_DIR / "lock.mdb").write_bytes(b"x")
    with raftlog.open_sync(str(path)) as log:
        assert [e.data for e in log.read(1)] == [b"kept"]
    assert CREATING_DIR not in os.listdir(path)


def test_the_writer_lock_alone_still_means_damaged(tmp_path):
    """Only creating.tmp/ marks a creation: raftlog.lock alone is a dir whose data.mdb was lost."""
    path = tmp_path / "node"
    path.mkdir()
    (path / LOCK_FILE).write_bytes(b"")
    with pytest.raises(raftlog.DataDirError, match="data.mdb is missing beside raftlog.lock"):
        LmdbStorage.open(str(path), node_id=1, cluster_id="c")
    (path / "notes.txt").write_text("mine")
    (path / CREATING_DIR).mkdir()
    with pytest.raises(raftlog.DataDirError):
        LmdbStorage.open(str(path), node_id=1, cluster_id="c")
