"""Real OS processes on 127.0.0.1: `raftlog node` x3 and x5, SIGKILL, restart, SIGSTOP/SIGCONT.

Every wait polls against a generous deadline (support/polling.py), so the tests do not depend
on timing luck, and a safety check that fails in any poll fails the test at once; every
process started is killed by PID in a finalizer. After each scenario every node's
`raftlog inspect --json` must show identical entries up to the commit index.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

import pytest

from raftlog.runtime.launcher import free_ports
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
from raftlog.runtime.client import Client, query_status
from support.polling import NotYet, wait_for
from support.safety import assert_committed_prefixes_agree, holds_acked

pytestmark = pytest.mark.process


def inspect_json(data_dir: str, timeout: float = 60) -> dict:
    """`raftlog inspect DIR --json` of a stopped (or running) node's data dir."""
    out = subprocess.run([sys.executable, "-m", "raftlog", "inspect", data_dir, "--json"],
                         capture_output=True, text=True, timeout=timeout, check=True)
    return json.loads(out.stdout)


def kill_all(procs: list[subprocess.Popen]) -> None:
    """SIGKILL every process still running (resumed first, in case it was SIGSTOPped) and reap them all."""
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            except ProcessLookupError:
                pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


class ProcCluster:
    """N `raftlog node` processes on ephemeral ports; kill/stop/cont/restart by node id.

    `verbosity` is the nodes' -v count: 1 logs events (INFO), 2 also DEBUG lines.
    """

    def __init__(self, n: int, root: str, verbosity: int = 1) -> None:
        self.n = n
        self.root = root
        self.verbosity = verbosity
        ports = free_ports(n)
        self.addresses = {i: f"127.0.0.1:{ports[i - 1]}" for i in range(1, n + 1)}
        self.peers = ",".join(f"{i}={a}" for i, a in self.addresses.items())
        self.procs: dict[int, subprocess.Popen] = {}
        self.all_procs: list[subprocess.Popen] = []
        self.stopped: set[int] = set()

    def data_dir(self, i: int) -> str:
        return os.path.join(self.root, f"node{i}")

    def start(self, i: int) -> None:
        log = open(os.path.join(self.root, f"node{i}.log"), "ab")
        cmd = [sys.executable, "-m", "raftlog", "-" + "v" * self.verbosity, "node", "--id", str(i),
               "--data", self.data_dir(i), "--peers", self.peers, "--cluster-id", "proc-test"]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[i] = proc
        self.all_procs.append(proc)

    def start_all(self) -> None:
        for i in self.addresses:
            self.start(i)

    def signal(self, i: int, sig: int) -> None:
        self.procs[i].send_signal(sig)
        if sig == signal.SIGSTOP:
            self.stopped.add(i)
        elif sig == signal.SIGCONT:
            self.stopped.discard(i)

    def kill(self, i: int) -> None:
        self.procs[i].kill()
        self.procs[i].wait(10)

    def alive(self) -> list[int]:
        return [i for i, p in self.procs.items() if p.poll() is None and i not in self.stopped]

    def client(self, ids: Optional[list[int]] = None, **kw: object) -> Client:
        ids = ids or list(self.addresses)
        return Client([self.addresses[i] for i in ids], cluster_id="proc-test", timeout=kw.pop("timeout", 20.0), **kw)

    def statuses(self, ids: Optional[list[int]] = None) -> dict[int, Optional[dict]]:
        """Every member's status, asked in-process in parallel (fast polling; None = no answer)."""
        ids = ids or list(self.addresses)

        async def ask() -> list:
            return await asyncio.gather(*(query_status(self.addresses[i], cluster_id="proc-test", timeout=1.0)
                                          for i in ids))
        return dict(zip(ids, asyncio.run(ask())))

    def leader(self, ids: Optional[list[int]] = None, above_term: int = 0) -> Optional[tuple[int, int]]:
        """(leader id, term) if a member of `ids` is leader at a term > above_term and a majority agree."""
        sts = {i: s for i, s in self.statuses(ids).items() if s is not None}
        leaders = [(s["term"], i) for i, s in sts.items() if s["role"] == "leader" and s["term"] > above_term]
        if not leaders:
            return None
        term, lid = max(leaders)
        agree = sum(1 for s in sts.values() if s["term"] == term and s["leader"] == lid)
        return (lid, term) if agree > self.n // 2 else None

    def inspect(self, i: int) -> dict:
        return inspect_json(self.data_dir(i))

    def log_of(self, i: int) -> str:
        """Everything node i has logged so far (all its runs: restarts append to the same file)."""
        with open(os.path.join(self.root, f"node{i}.log"), errors="replace") as f:
            return f.read()

    def close(self) -> None:
        kill_all(self.all_procs)


@pytest.fixture
def make_cluster(tmp_path):
    made: list[ProcCluster] = []

    def make(n: int) -> ProcCluster:
        c = ProcCluster(n, str(tmp_path))
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def assert_logs_agree(cluster: ProcCluster, ids: list[int], acked: dict[int, bytes]) -> None:
    """Once the nodes `ids` converge, identical entries up to one commit index holding every acknowledged append.

    Every poll checks what is committed so far (support/safety.py): a disagreement below a
    commit index or a lost acknowledged entry fails at once, even if a later poll would agree.
    Only convergence (every node at the same commit index, covering every acknowledged
    index) is waited for.
    """
    def settled() -> bool:
        dumps = {i: cluster.inspect(i) for i in ids}
        assert_committed_prefixes_agree(dumps, acked)
        commits = {i: d["commit"] for i, d in dumps.items()}
        if len(set(commits.values())) > 1 or max(commits.values()) < max(acked, default=0):
            raise NotYet(f"commit index per node {commits}, highest acknowledged index {max(acked, default=0)}")
        return True
    wait_for(f"nodes {ids} to agree up to one commit index", settled)


def read_all(client: Client) -> dict[int, bytes]:
    """index -> payload of every committed data entry, read (linearizable) through `client`."""
    return {e.index: e.data for e in client.read(1)}


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
            wait_for(f"node {i} to serve every acked entry", lambda: holds_acked(read_all(c), acked, f"node {i}"))
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
    cluster.signal(lid, signal.SIGSTOP)
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
    cluster.signal(lid, signal.SIGCONT)
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
