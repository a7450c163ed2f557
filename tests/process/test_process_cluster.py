"""Real OS processes on 127.0.0.1: `raftlog node` x3 and x5, SIGKILL, restart, SIGSTOP/SIGCONT.

Every wait polls against a generous deadline (support/polling.py), so the tests do not depend
on timing luck, and a safety check that fails in any poll fails the test at once; every
process started is killed by PID in a finalizer. After each scenario every node's
`raftlog inspect --json` must show identical entries up to the commit index.
"""
from __future__ import annotations

import socket
import time

import pytest

from raftlog.hot import (
    FRAME_ERROR,
    FRAME_HANDSHAKE,
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    FrameDecoder,
    RecordBatch,
    KIND_DATA,
    encode_append,
    encode_handshake,
)
from support.cluster import ProcCluster, assert_logs_agree, clusters, read_all
from support.polling import wait_for
from support.safety import holds_acked

pytestmark = pytest.mark.process


@pytest.fixture
def make_cluster(tmp_path):
    with clusters(str(tmp_path), ProcCluster) as make:
        yield make


def test_three_nodes_elect_replicate_failover_restart_and_stall(make_cluster):
    cluster = make_cluster(3)
    t0 = time.monotonic()
    cluster.start_all()
    lid, term = wait_for("a leader", lambda: cluster.leader())
    elect_s = time.monotonic() - t0
    print(f"\ntime to elect (3 processes, from spawn): {elect_s:.2f}s")

    acked: dict[int, bytes] = {}
    with cluster.client() as client:
        idx = client.append(b"first")
        acked[idx] = b"first"
        payloads = [f"batch-{k}".encode() for k in range(500)]
        for i, p in zip(client.append_many(payloads), payloads):
            acked[i] = p
    assert len(set(acked)) == len(acked) == 501
    # Read back from every node (each one's own committed log).
    for i in cluster.addresses:
        with cluster.client([i], read_from="any") as c:
            wait_for(f"node {i} to serve every acked entry",
                     lambda c=c, i=i: holds_acked(read_all(c), acked, f"node {i}"))
    assert_logs_agree(cluster, [1, 2, 3], acked)

    # SIGKILL the leader: a new one takes over; every acknowledged append survives.
    t_kill = time.monotonic()
    cluster.kill(lid)
    rest = [i for i in cluster.addresses if i != lid]
    new_lid, new_term = wait_for("a new leader", lambda: cluster.leader(rest, above_term=term))
    failover_s = time.monotonic() - t_kill
    print(f"time to fail over after SIGKILL of the leader: {failover_s:.2f}s")
    assert new_lid != lid
    with cluster.client(rest) as client:
        for k in range(50):
            p = f"after-kill-{k}".encode()
            acked[client.append(p)] = p
        seen = read_all(client)
    assert all(seen.get(k) == v for k, v in acked.items())
    assert_logs_agree(cluster, rest, acked)

    # Restart the killed node: it catches up.
    cluster.start(lid)
    with cluster.client([lid], read_from="any") as c:
        wait_for(f"restarted node {lid} to catch up", lambda: holds_acked(read_all(c), acked, f"node {lid}"))
    assert_logs_agree(cluster, [1, 2, 3], acked)

    # SIGSTOP the leader past an election timeout, hand it appends it cannot acknowledge,
    # then SIGCONT: it steps down and those entries are replaced; no acked entry is lost.
    lid, term = wait_for("a leader", lambda: cluster.leader())
    host, port = cluster.addresses[lid].rsplit(":", 1)
    raw = socket.create_connection((host, int(port)))
    raw.settimeout(10)
    raw.sendall(encode_handshake(PROTOCOL_VERSION, ROLE_CLIENT, 0, "proc-test"))
    dec = FrameDecoder()
    frames: list = []
    while not frames:
        frames += dec.feed(raw.recv(65536))
    assert frames[0][0] == FRAME_HANDSHAKE
    cluster.pause(lid)
    # Queued in the stopped leader's socket before any newer-term message can be: on SIGCONT
    # it most likely proposes these at its old term first, and they are then replaced.
    doomed = [f"doomed-{k}".encode() for k in range(20)]
    raw.sendall(encode_append(1, RecordBatch.encode(0, KIND_DATA, doomed)))
    others = [i for i in cluster.addresses if i != lid]
    wait_for("a leader among the others", lambda: cluster.leader(others, above_term=term))
    with cluster.client(others) as client:
        for k in range(30):
            p = f"during-stop-{k}".encode()
            acked[client.append(p)] = p
    # The others elected a leader and committed without it: it has been stopped past an election timeout.
    cluster.resume(lid)
    wait_for(f"node {lid} to step down", lambda: (cluster.statuses([lid])[lid] or {}).get("role") == "follower")
    frames = []
    while not frames:
        chunk = raw.recv(65536)
        if not chunk:
            break
        frames += dec.feed(chunk)
    raw.close()
    # Never acknowledged: the answer is an error (not-leader, or replaced by the new leader).
    assert frames and frames[0][0] == FRAME_ERROR, frames
    print("the stopped leader answered the doomed append with:", frames[0][5])
    with cluster.client() as client:
        for k in range(20):
            p = f"after-cont-{k}".encode()
            acked[client.append(p)] = p
        final = read_all(client)
    assert not set(final.values()) & set(doomed), "an entry refused by the stopped leader was committed"
    assert all(final.get(k) == v for k, v in acked.items())
    assert_logs_agree(cluster, [1, 2, 3], acked)


def test_five_nodes_failover_keeps_acknowledged_appends(make_cluster):
    cluster = make_cluster(5)
    t0 = time.monotonic()
    cluster.start_all()
    lid, term = wait_for("a leader", lambda: cluster.leader())
    print(f"\ntime to elect (5 processes, from spawn): {time.monotonic() - t0:.2f}s")
    acked: dict[int, bytes] = {}
    with cluster.client() as client:
        payloads = [f"five-{k}".encode() for k in range(300)]
        for i, p in zip(client.append_many(payloads), payloads):
            acked[i] = p
    assert_logs_agree(cluster, [1, 2, 3, 4, 5], acked)
    t_kill = time.monotonic()
    cluster.kill(lid)
    rest = [i for i in cluster.addresses if i != lid]
    wait_for("a new leader", lambda: cluster.leader(rest, above_term=term))
    print(f"time to fail over after SIGKILL (5 nodes): {time.monotonic() - t_kill:.2f}s")
    with cluster.client(rest) as client:
        for k in range(30):
            p = f"five-after-{k}".encode()
            acked[client.append(p)] = p
    assert_logs_agree(cluster, rest, acked)
    cluster.start(lid)
    assert_logs_agree(cluster, [1, 2, 3, 4, 5], acked)
