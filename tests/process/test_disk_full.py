"""Disk full, at process level: node 3's data dir sits on a small tmpfs mounted by the test.

Under a steady append load node 3's disk fills: it must say so (an ERROR line and
`storage_error` in its status), keep running, and acknowledge nothing it has not written:
throughout, the leader's recorded match index for every follower never exceeds what that
follower has durably stored (read from its data dir with `raftlog inspect`, after the
leader's figure was taken, so the comparison is conservative). The other two keep
committing. When the tmpfs is remounted larger, node 3 logs that it resumed, catches up, and
every node's log is identical up to the commit index and holds every acknowledged append.

Skips (with the reason) where tmpfs cannot be mounted (not root, no CAP_SYS_ADMIN); a failure
under RAFTLOG_REQUIRE_ALL_TESTS, which CI sets.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from support.cluster import ProcCluster, assert_logs_agree
from support.polling import wait_for

pytestmark = pytest.mark.process


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs at tmp_path/small, unmounted at the end (lazily, if a process still holds it)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the disk-full test: {done.stderr.strip() or done.returncode}")
    yield str(mnt)
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


class SmallDiskCluster(ProcCluster):
    """Node 3's data dir on the small filesystem."""

    def __init__(self, root: str, small: str) -> None:
        super().__init__(3, root)
        self.small = small

    def data_dir(self, i: int) -> str:
        return os.path.join(self.small, "node3") if i == 3 else super().data_dir(i)

    def durable_last(self, i: int) -> int:
        return self.durable(i)[0]


def check_no_ack_beyond_durable(cluster: SmallDiskCluster, leader: int, checks: list) -> None:
    """The leader's match for each follower <= that follower's durable last index (read afterwards)."""
    st = cluster.statuses([leader])[leader]
    if not st or st.get("role") != "leader":
        return
    for row in st.get("member_table") or []:
        fid = row["id"]
        if fid == leader:
            continue
        durable, term = cluster.durable(fid)
        if term > st["term"]:
            continue                     # a newer leader may have truncated what this one counted
        assert row["match"] <= durable, (f"leader {leader} counts node {fid} at {row['match']}, "
                                         f"but node {fid} has only {durable} durably")
        checks.append((fid, row["match"], durable))


def test_disk_full_stops_acknowledging_then_resumes(tmp_path, small_fs):
    cluster = SmallDiskCluster(str(tmp_path), small_fs)
    try:
        cluster.start(1)
        cluster.start(2)
        leader, _ = wait_for("a leader of nodes 1 and 2", lambda: cluster.leader([1, 2]))
        cluster.start(3)                         # joins as a follower of the existing leader
        acked: dict[int, bytes] = {}
        stop = threading.Event()
        errors: list[BaseException] = []

        def load() -> None:
            try:
                with cluster.client([1, 2], timeout=30.0) as c:
                    k = 0
                    while not stop.is_set():
                        items = [b"%08d" % (k + j) + b"d" * 1000 for j in range(200)]
                        for i, p in zip(c.append_many(items), items):
                            acked[i] = p
                        k += 200
                        time.sleep(0.1)          # ~2000 entries/s: fills node 3 in seconds, keeps the logs small
            except BaseException as exc:
                errors.append(exc)
        t = threading.Thread(target=load)
        t.start()
        checks: list = []
        try:
            def full() -> bool:
                check_no_ack_beyond_durable(cluster, leader, checks)
                return "disk full: cannot write to" in cluster.log_of(3)
            wait_for("node 3 to report a full disk", full, timeout=90, every=0.2)
            st3 = wait_for("node 3's status to show it", lambda: (cluster.statuses([3])[3] or {}).get("storage_error"))
            assert st3.startswith("disk full"), st3
            assert cluster.procs[3].poll() is None, "a full disk must not stop the node"
            stuck = cluster.durable_last(3)
            n_before = len(acked)
            for _ in range(4):                   # the others keep committing; node 3 is counted no further
                check_no_ack_beyond_durable(cluster, leader, checks)
                time.sleep(0.2)
            wait_for("appends to go on without node 3", lambda: len(acked) > n_before + 500)
            assert cluster.durable_last(3) == stuck
        finally:
            stop.set()
            t.join(60)
        assert not errors, f"the load failed: {errors[0]!r}"
        subprocess.run(["mount", "-o", "remount,size=256m", small_fs], check=True)
        wait_for("node 3 to resume", lambda: "storage writable again after" in cluster.log_of(3), timeout=30)
        wait_for("node 3's status to clear", lambda: (cluster.statuses([3])[3] or {"storage_error": 1})
                 .get("storage_error") is None)
        assert_logs_agree(cluster, [1, 2, 3], acked)
        check_no_ack_beyond_durable(cluster, leader, checks)
        print(f"\ndisk full: {len(acked)} acknowledged appends kept; node 3 stuck at {stuck} while full; "
              f"{len(checks)} leader-match <= durable checks")
        assert len(checks) >= 5
    finally:
        cluster.close()
