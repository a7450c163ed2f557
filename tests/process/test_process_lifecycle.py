"""Process lifecycle: SIGTERM shuts a node down cleanly (and its data dir opens again);
`raftlog cluster` streams role changes and leaves no process behind on Ctrl-C or on its own death."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from raftlog.client import Client
from raftlog.runtime.launcher import free_ports, ports_free
from support.cluster import ProcCluster, read_all
from support.polling import wait_for
from support.safety import holds_acked

pytestmark = pytest.mark.process


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_sigterm_stops_a_node_cleanly_under_load_and_it_restarts(tmp_path):
    cluster = ProcCluster(3, str(tmp_path))
    try:
        cluster.start_all()
        lid, _ = wait_for("a leader", lambda: cluster.leader())
        acked: dict[int, bytes] = {}
        errors: list[BaseException] = []
        stop = threading.Event()

        def load() -> None:
            try:
                with cluster.client(timeout=30.0) as c:
                    k = 0
                    while not stop.is_set():
                        items = [b"load-%d" % (k + j) for j in range(50)]
                        for i, p in zip(c.append_many(items), items):
                            acked[i] = p
                        k += 50
            except BaseException as exc:   # noqa: BLE001 - reported below
                errors.append(exc)

        def more_load(what: str, count: int) -> None:
            before = len(acked)
            wait_for(what, lambda: errors or len(acked) > before + count)
            assert not errors, f"the load failed: {errors[0]!r}"
        t = threading.Thread(target=load)
        t.start()
        try:
            more_load("some load", 200)
            proc = cluster.procs[lid]
            proc.send_signal(signal.SIGTERM)           # the leader, with writes in flight
            assert proc.wait(20) == 0
            log = (tmp_path / f"node{lid}.log").read_text()
            assert f"node {lid} stopped" in log
            more_load(f"appends to go on without node {lid}", 200)     # entries the restarted node must catch up on
        finally:
            stop.set()
            t.join(60)
        assert not errors, f"the load failed: {errors[0]!r}"
        cluster.start(lid)                         # the lock was released, LMDB closed cleanly
        with cluster.client([lid], read_from="any") as c:
            wait_for(f"node {lid} back and caught up", lambda: holds_acked(read_all(c), acked, f"node {lid}"))
        for i in cluster.addresses:
            if i != lid:
                cluster.procs[i].send_signal(signal.SIGTERM)
        for i in cluster.addresses:
            if i != lid:
                assert cluster.procs[i].wait(20) == 0
    finally:
        cluster.close()


def consecutive_free_ports(n: int) -> int:
    """A base port such that base .. base + n - 1 are all free on 127.0.0.1 right now."""
    for _ in range(100):
        base = free_ports(1)[0]
        if ports_free(base, n):
            return base
    raise RuntimeError("no run of free ports")


def start_cluster_command(tmp_path, n: int = 3) -> tuple[subprocess.Popen, list[str], int]:
    base = consecutive_free_ports(n)
    cmd = [sys.executable, "-m", "raftlog", "cluster", "-n", str(n), "--base-port", str(base),
           "--data", str(tmp_path / "c"), "--no-sync"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    return proc, lines, base


def test_cluster_command_streams_roles_and_ctrl_c_stops_everything(tmp_path):
    proc, lines, base = start_cluster_command(tmp_path)
    try:
        wait_for("a leader line", lambda: any("became leader for term" in ln for ln in lines))
        wait_for("three nodes", lambda: len(children_of(proc.pid)) == 3)
        kids = children_of(proc.pid)
        for i in (1, 2, 3):        # each node's PID, address and data dir, so a user can kill one
            prefix = f"[node {i}] pid "
            line = wait_for(f"node {i}'s pid line",
                            lambda p=prefix: next((ln for ln in lines if ln.startswith(p)), None))
            pid = int(line.split()[3].rstrip(","))
            assert pid in kids, (line, kids)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            assert argv[argv.index(b"--id") + 1] == str(i).encode(), (line, argv)
            assert line.endswith(f", 127.0.0.1:{base + i - 1}, {tmp_path / 'c' / f'node{i}'}\n"), line
        peers = ",".join(f"127.0.0.1:{base + i}" for i in range(3))
        follow = subprocess.Popen([sys.executable, "-m", "raftlog", "read", "--peers", peers, "--follow"],
                                  stdout=subprocess.PIPE, text=True)
        followed: list[str] = []
        threading.Thread(target=lambda: followed.extend(iter(follow.stdout.readline, "")), daemon=True).start()
        try:
            with Client(peers) as c:
                index = c.append(b"via cluster")
                assert index >= 1
                wait_for("read --follow to print it", lambda: f"{index}\tvia cluster\n" in followed)
                later = c.append(b"later")
                wait_for("read --follow to print the next one", lambda: f"{later}\tlater\n" in followed)
        finally:
            follow.kill()
            follow.wait()
        wait_for("two follower lines", lambda: sum("following node" in ln for ln in lines) >= 2)
        os.kill(kids[0], signal.SIGKILL)           # a node killed from outside: reported, the rest go on
        wait_for("the kill to be reported", lambda: any("killed by SIGKILL" in ln for ln in lines))
        with Client(peers) as c:
            assert c.append(b"still serving") >= 1
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert all(gone(k) for k in kids)
        assert any("all nodes stopped" in ln for ln in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cluster_children_die_with_a_killed_supervisor(tmp_path):
    proc, lines, base = start_cluster_command(tmp_path)
    kids: list[int] = []
    try:
        wait_for("three nodes", lambda: len(children_of(proc.pid)) == 3)
        kids = children_of(proc.pid)
        wait_for("a leader line", lambda: any("became leader for term" in ln for ln in lines))
        proc.kill()
        proc.wait()
        wait_for("the nodes to exit", lambda: all(gone(k) for k in kids), timeout=20)
    finally:
        for k in kids:
            if not gone(k):
                os.kill(k, signal.SIGKILL)
