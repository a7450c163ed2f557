"""Real processes: linearizable reads never miss an acknowledged append, also from a node that was
cut off (SIGSTOP) and has not caught up; a leader without a quorum serves no linearizable read.
"""
from __future__ import annotations

import signal

import pytest

from raftlog.errors import RaftlogError
from raftlog.runtime.client import Client
from test_process_cluster import ProcCluster, wait_for

pytestmark = pytest.mark.process


@pytest.fixture
def cluster(tmp_path):
    c = ProcCluster(3, str(tmp_path))
    yield c
    c.close()


def test_linearizable_reads_from_a_node_that_was_partitioned_miss_nothing(cluster):
    c = cluster
    c.start_all()
    lid, _ = wait_for("a leader", lambda: c.leader())
    f = next(i for i in c.addresses if i != lid)
    acked: dict[int, bytes] = {}
    with c.client() as client:
        for k in range(5):
            acked[client.append(b"before-%d" % k)] = b"before-%d" % k
        for rnd in range(3):
            c.signal(f, signal.SIGSTOP)          # cut off: it misses what follows
            for k in range(30):
                payload = b"r%d-%d" % (rnd, k)
                acked[client.append(payload)] = payload
            c.signal(f, signal.SIGCONT)
            # At once, before it has caught up: the read must still see every acknowledged append.
            with Client([c.addresses[f]], cluster_id="proc-test", read_from="any", timeout=20.0) as at_f:
                got = {e.index: e.data for e in at_f.read(1)}
            missing = [i for i in acked if got.get(i) != acked[i]]
            assert not missing, f"round {rnd}: a linearizable read at node {f} missed {missing[:5]}"
        # And through the leader, every consistency level that promises it.
        for consistency in ("linearizable", "lease"):
            got = {e.index: e.data for e in client.read(1, consistency=consistency)}
            assert all(got.get(i) == p for i, p in acked.items()), consistency


def test_a_leader_cut_off_from_its_quorum_serves_no_linearizable_read(cluster):
    c = cluster
    c.start_all()
    lid, _ = wait_for("a leader", lambda: c.leader())
    with c.client() as client:
        client.append(b"x")
    others = [i for i in c.addresses if i != lid]
    for i in others:
        c.signal(i, signal.SIGSTOP)
    try:
        with Client([c.addresses[lid]], cluster_id="proc-test", read_from="any", timeout=2.0) as at_leader:
            stale = at_leader.read(1, consistency="stale")
            assert [e.data for e in stale] == [b"x"]          # its own state, at once
            with pytest.raises(RaftlogError):
                at_leader.read(1)                            # linearizable: no quorum, no answer
    finally:
        for i in others:
            c.signal(i, signal.SIGCONT)
    with c.client() as client:
        assert [e.data for e in client.read(1)] == [b"x"]
