"""A flipped byte in one node's stored entry, at process level.

One byte of one stored payload is flipped inside a follower's LMDB file while it runs. Then:
reading that entry from it fails with an error naming the index (never the bad bytes), its
log and status name it, the cluster keeps committing, and `raftlog repair` refuses to touch
the running node. Restarted, the node refuses to start, naming the index and the remedy;
`raftlog inspect` and a scan-only `raftlog repair` report it. After `raftlog repair DIR
--peers <the others>` the node starts, serves the entry again, and every node's log is
identical up to the commit index and holds every acknowledged append.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from raftlog.errors import RaftlogError

from support.cluster import ProcCluster, assert_logs_agree
from support.corruption import flip_byte_of
from support.polling import wait_for

pytestmark = pytest.mark.process


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raftlog", *args], capture_output=True, text=True, timeout=60)


def test_corrupt_entry_is_detected_not_served_and_repaired_from_the_cluster(tmp_path):
    cluster = ProcCluster(3, str(tmp_path))
    try:
        cluster.start_all()
        wait_for("a leader", lambda: cluster.leader())
        acked: dict[int, bytes] = {}
        with cluster.client() as c:
            items = [b"entry-%04d" % k for k in range(300)]
            items[150] = b"corrupt-me-0150-payload"
            for i, p in zip(c.append_many(items), items):
                acked[i] = p
        bad = next(i for i, p in acked.items() if p == b"corrupt-me-0150-payload")
        assert_logs_agree(cluster, [1, 2, 3], acked)
        lid, _ = wait_for("a leader", lambda: cluster.leader())
        victim = next(i for i in (3, 2, 1) if i != lid)       # a follower
        others = [i for i in cluster.addresses if i != victim]
        # Bit rot under a running node (LMDB reads through the page cache, so it sees it).
        flip_byte_of(os.path.join(cluster.data_dir(victim), "data.mdb"), b"corrupt-me-0150-payload")
        with cluster.client([victim], read_from="any") as c:
            def refused() -> bool:
                try:
                    c.read(bad, limit=1, consistency="stale")
                except RaftlogError as exc:
                    assert f"corrupt log entry at index {bad}" in str(exc), exc
                    return True
                return False
            wait_for(f"node {victim} to refuse to serve index {bad}", refused)
            assert [e.index for e in c.read(bad + 1, limit=5, consistency="stale")] == list(range(bad + 1, bad + 6))
        st = wait_for("the index in the status", lambda: cluster.statuses([victim])[victim])
        assert st["corrupt_index"] == bad
        log_text = open(os.path.join(str(tmp_path), f"node{victim}.log"), errors="replace").read()
        assert f"corrupt log entry at index {bad}" in log_text and "raftlog repair" in log_text
        with cluster.client(others) as c:                            # the cluster is unaffected
            for k in range(50):
                p = b"after-corruption-%d" % k
                acked[c.append(p)] = p
        peers = ",".join(cluster.addresses[i] for i in others)
        out = cli("repair", cluster.data_dir(victim), "--peers", peers, "--cluster-id", "proc-test")
        assert out.returncode != 0 and "already open for writing" in out.stderr, out   # refuses a running node

        # Restarted, the node refuses to start on a log it cannot trust, naming the index and the remedy.
        cluster.procs[victim].send_signal(signal.SIGTERM)
        cluster.procs[victim].wait(20)
        cluster.start(victim)
        assert cluster.procs[victim].wait(30) != 0
        log_text = open(os.path.join(str(tmp_path), f"node{victim}.log"), errors="replace").read()
        assert f"Error: corrupt log entry at index {bad}" in log_text and "run `raftlog repair" in log_text
        out = cli("inspect", cluster.data_dir(victim), "--json")
        assert out.returncode != 0 and f"corrupt log entry at index {bad}" in out.stderr, out
        out = cli("repair", cluster.data_dir(victim))                  # scan only
        assert out.returncode == 1 and f"corrupt entries: [{bad}]" in out.stdout, out
        out = cli("repair", cluster.data_dir(victim), "--peers", peers, "--cluster-id", "proc-test")
        assert out.returncode == 0 and f"repaired from the cluster: [{bad}]" in out.stdout, out
        out = cli("repair", cluster.data_dir(victim))
        assert out.returncode == 0 and "corrupt entries: none" in out.stdout, out
        cluster.start(victim)
        with cluster.client([victim], read_from="any") as c:
            wait_for(f"node {victim} to serve index {bad} again",
                     lambda: c.read(bad, limit=1, consistency="stale")[0].data == b"corrupt-me-0150-payload")
        assert_logs_agree(cluster, [1, 2, 3], acked)
    finally:
        cluster.close()


def test_a_leader_with_a_corrupt_entry_neither_serves_nor_replicates_it(tmp_path):
    """A corrupt entry on the leader's disk that a lagging follower needs: what the follower gets
    is the leader's intact copy (from its entry cache, CRC-checked on receipt), never the bad
    bytes; a read of that index from the leader is refused naming it; nothing is lost.
    (Were the entry out of the cache, the leader's read from disk would fail its CRC and the
    node would stop; restarted, it refuses to start on it, as the test above shows.)"""
    cluster = ProcCluster(3, str(tmp_path))
    try:
        cluster.start_all()
        lid, _ = wait_for("a leader", lambda: cluster.leader())
        lagger = next(i for i in cluster.addresses if i != lid)
        third = next(i for i in cluster.addresses if i not in (lid, lagger))
        # SIGTERM only once the node answers: before its loop runs, the signal's default action kills it.
        wait_for(f"node {lagger} to answer", lambda: cluster.statuses([lagger])[lagger])
        cluster.procs[lagger].send_signal(signal.SIGTERM)          # falls behind: will need the entry
        assert cluster.procs[lagger].wait(20) == 0
        acked: dict[int, bytes] = {}
        with cluster.client([lid, third]) as c:
            items = [b"lead-%04d" % k for k in range(200)]
            items[100] = b"leader-corrupt-me-0100"
            for i, p in zip(c.append_many(items), items):
                acked[i] = p
        bad = next(i for i, p in acked.items() if p == b"leader-corrupt-me-0100")
        flip_byte_of(os.path.join(cluster.data_dir(lid), "data.mdb"), b"leader-corrupt-me-0100")
        cluster.start(lagger)
        assert_logs_agree(cluster, [lagger, third], acked)            # the lagging follower has the intact entry
        with cluster.client([lid], read_from="any") as c:
            with pytest.raises(RaftlogError, match=f"corrupt log entry at index {bad}"):
                c.read(bad, limit=1, consistency="stale")
        assert cluster.statuses([lid])[lid]["corrupt_index"] == bad
        assert cluster.procs[lid].poll() is None
    finally:
        cluster.close()
