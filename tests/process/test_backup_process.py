"""`raftlog backup` of a live 3-node cluster under load, `raftlog restore` into three new dirs, the new cluster
started from them: every entry acknowledged up to the backup's index is there, and the new cluster takes appends;
the same for a cluster whose logs retention compacted behind a snapshot file."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import threading

import pytest

from raftlog import Compacted
from raftlog.runtime.launcher import free_ports
from raftlog.runtime.sessions import unwrap_snapshot
from raftlog.storage.backup_file import read_backup
from raftlog.storage.lmdb import LmdbStorage
from raftlog.storage.restore import derived_cluster_id
from support.cluster import ProcCluster, assert_logs_agree, clusters, read_all
from support.polling import NotYet, wait_for
from support.safety import holds_acked

pytestmark = pytest.mark.process


def raftlog_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`raftlog ARGS...` in a new process."""
    return subprocess.run([sys.executable, "-m", "raftlog", *args], capture_output=True, text=True, timeout=timeout)


class Load:
    """Appends batches through one client in a thread until stopped; `acked`: index -> payload acknowledged."""

    def __init__(self, cluster: ProcCluster) -> None:
        self.cluster = cluster
        self.acked: dict[int, bytes] = {}
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self.cluster.client() as client:
                k = 0
                while not self._stop.is_set():
                    payloads = [f"entry-{k + j}".encode() for j in range(50)]
                    k += len(payloads)
                    for index, payload in zip(client.append_many(payloads), payloads):
                        self.acked[index] = payload
        except BaseException as exc:        # reported by stop()
            self.failure = exc

    def at_least(self, count: int) -> int:
        """The number acknowledged once it reaches `count` (NotYet before)."""
        if self.failure is not None:
            raise AssertionError(f"the load failed: {self.failure!r}")
        if len(self.acked) < count:
            raise NotYet(f"{len(self.acked)} appends acknowledged")
        return len(self.acked)

    def stop(self) -> dict[int, bytes]:
        self._stop.set()
        self._thread.join(timeout=60)
        assert self.failure is None, f"the load failed: {self.failure!r}"
        return dict(self.acked)


def test_backup_under_load_restores_into_a_new_cluster_with_every_acknowledged_entry(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    with clusters(str(tmp_path / "old"), ProcCluster) as make:
        old = make(3)
        old.start_all()
        lid, _ = wait_for("a leader", lambda: old.leader())
        load = Load(old)
        wait_for("appends acknowledged before the backup", lambda: load.at_least(1000))
        files = {"leader": str(tmp_path / "leader.backup"), "follower": str(tmp_path / "follower.backup")}
        follower = next(i for i in old.addresses if i != lid)
        headers = {}
        for who, extra in (("leader", ()), ("follower", ("--from", str(follower)))):
            out = raftlog_cli("backup", "--peers", old.peers, "--cluster-id", old.cluster_id, "--json", *extra,
                              files[who])
            assert out.returncode == 0, out.stderr
            headers[who] = json.loads(out.stdout)
        assert headers["follower"]["node_id"] == follower
        third = next(i for i in old.addresses if i not in (lid, follower))
        with old.client([third], read_from="any") as client:      # the Python API, from the third member
            from_api = client.backup(str(tmp_path / "api.backup"))
        assert from_api.node_id == third and read_backup(str(tmp_path / "api.backup")) == from_api
        backup = read_backup(files["leader"])
        assert backup.index == headers["leader"]["index"]
        wait_for("appends acknowledged after the backup", lambda: load.at_least(backup.index + 500))
        acked = load.stop()

    ports = free_ports(3)
    addresses = {i: f"127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3)}
    peers = ",".join(f"{i}={a}" for i, a in addresses.items())
    cluster_id = derived_cluster_id(backup, addresses)
    new = ProcCluster(3, str(tmp_path / "new"), addresses=addresses, cluster_id=cluster_id)
    try:
        for i in addresses:
            out = raftlog_cli("restore", files["leader"], "--data", new.data_dir(i), "--id", str(i), "--peers",
                              peers)
            assert out.returncode == 0, out.stderr
            assert f"--cluster-id {cluster_id}" in out.stdout
            checked = raftlog_cli("check", new.data_dir(i))
            assert checked.returncode == 0, checked.stdout + checked.stderr
        new.start_all()
        wait_for("a leader of the restored cluster", lambda: new.leader())
        before = {i: p for i, p in acked.items() if i <= backup.index}
        assert before, f"no acknowledged entry at or below the backup's index {backup.index}"
        with new.client() as client:
            served = read_all(client)
            assert holds_acked(served, before, "the restored cluster"), (
                f"acknowledged entries up to the backup's index {backup.index} missing: "
                f"{sorted(set(before) - set(served))[:5]}")
            assert max(served) <= backup.index, "entries past the backup's index came back"
            after = client.append(b"after the restore")
            assert after > backup.index + 1
        assert_logs_agree(new, [1, 2, 3], {**before, after: b"after the restore"})
    finally:
        new.close()


def test_a_retention_cluster_compacted_under_load_is_backed_up_and_restored(tmp_path):
    """`raftlog node --retain-entries`: its log is compacted behind a snapshot file; the backup carries that file."""
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = ProcCluster(3, str(tmp_path / "old"), extra=["--retain-entries", "300"])
    try:
        old.start_all()
        wait_for("a leader", lambda: old.leader())
        load = Load(old)

        def compacted() -> dict:
            firsts = {i: (s or {}).get("first_index", 0) for i, s in old.statuses().items()}
            if min(firsts.values()) <= 1:
                raise NotYet(f"first index per member {firsts}")
            return firsts
        wait_for("every member to compact under load", compacted)
        path = str(tmp_path / "retained.backup")
        out = raftlog_cli("backup", "--peers", old.peers, "--cluster-id", old.cluster_id, "--json", path)
        assert out.returncode == 0, out.stderr
        backup = read_backup(path)
        assert backup.snapshot_file is not None and backup.first_index > 1, backup
        assert json.loads(out.stdout)["snapshot_file"] == backup.snapshot_file
        target = len(load.acked) + 500
        wait_for("appends acknowledged after the backup", lambda: load.at_least(target))
        acked = load.stop()
    finally:
        old.close()

    ports = free_ports(3)
    addresses = {i: f"127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3)}
    peers = ",".join(f"{i}={a}" for i, a in addresses.items())
    new = ProcCluster(3, str(tmp_path / "new"), addresses=addresses, cluster_id=derived_cluster_id(backup, addresses))
    try:
        for i in addresses:
            out = raftlog_cli("restore", path, "--data", new.data_dir(i), "--id", str(i), "--peers", peers)
            assert out.returncode == 0, out.stderr
            checked = raftlog_cli("check", new.data_dir(i))
            assert checked.returncode == 0, checked.stdout + checked.stderr
            with LmdbStorage.open(new.data_dir(i), node_id=i, cluster_id=new.cluster_id, readonly=True) as s:
                assert s.snapshot_file() == backup.snapshot_file
                assert s.snapshot_meta().conf_state.addresses == tuple(sorted(addresses.items()))
                assert unwrap_snapshot(io.BytesIO(s.snapshot_data()))[1] is not None   # the session table
        new.start_all()
        wait_for("a leader of the restored cluster", lambda: new.leader())
        kept = {i: p for i, p in acked.items() if backup.first_index <= i <= backup.index}
        assert kept, f"no acknowledged entry in [{backup.first_index}, {backup.index}]"
        with new.client() as client:
            served = {e.index: e.data for e in client.read(backup.first_index)}
            assert holds_acked(served, kept, "the restored cluster"), (
                f"acknowledged entries in [{backup.first_index}, {backup.index}] missing: "
                f"{sorted(set(kept) - set(served))[:5]}")
            assert max(served) <= backup.index, "entries past the backup's index came back"
            with pytest.raises(Compacted):
                client.read(backup.first_index - 1)
            after = client.append(b"after the restore")
            assert after > backup.index + 1
        assert_logs_agree(new, [1, 2, 3], {**kept, after: b"after the restore"})
        assert "client sessions restored from a snapshot" in open(new.log_path(1)).read()
    finally:
        new.close()
