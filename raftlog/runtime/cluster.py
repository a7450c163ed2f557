"""`raftlog cluster`: N local node processes on consecutive ports, their events streamed, all stopped together.

The nodes are launched by raftlog.runtime.launcher: each in its own session (so a terminal's
Ctrl-C reaches only this supervisor, which then stops them in order with SIGTERM, and SIGKILL
after a grace period), and each gets SIGTERM from the kernel if the supervisor itself dies
(PR_SET_PDEATHSIG), so no node outlives it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Callable, Optional, TextIO

from raftlog.runtime.launcher import NodeProcesses


def node_dirs(data_dir: str) -> list[int]:
    """The ids of the node data dirs under data_dir that hold anything (`node1`, `node2`, ...), sorted."""
    try:
        names = os.listdir(data_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    ids = []
    for name in names:
        path = os.path.join(data_dir, name)
        if name.startswith("node") and name[4:].isdigit() and os.path.isdir(path) and os.listdir(path):
            ids.append(int(name[4:]))
    return sorted(ids)


def check_cluster_size(data_dir: str, n: int) -> None:
    """ValueError naming both sizes when data_dir holds node dirs other than node1..node{n}.

    `raftlog cluster -n K` over a dir made for another size would start nodes whose --peers
    disagree with their logs, or new empty voters beside a cluster that never had them.
    """
    found = node_dirs(data_dir)
    if not found or found == list(range(1, n + 1)):
        return
    if found == list(range(1, len(found) + 1)):
        raise ValueError(f"--data {data_dir} was made for {len(found)} nodes (node1..node{len(found)}), not {n}: "
                         f"run `raftlog cluster -n {len(found)}` over it, or give another --data")
    names = ", ".join(f"node{i}" for i in found)
    raise ValueError(f"--data {data_dir} holds {names}, not the {n} nodes node1..node{n} that -n {n} runs: "
                     f"give another --data")


class LocalCluster:
    """Supervises N node processes: `start()`, `wait()`, `stop()`."""

    def __init__(self, n: int, base_port: int, data_dir: str, *, host: str = "127.0.0.1", cluster_id: str = "raftlog",
                 sync: bool = True, out: TextIO = sys.stdout, extra: tuple[str, ...] = ()) -> None:
        """N nodes over data_dir/node1..nodeN; ValueError when data_dir was made for another size."""
        check_cluster_size(data_dir, n)
        self.n = n
        self.data_dir = data_dir
        self.cluster_id = cluster_id
        self.sync = sync
        self.out = out
        self.extra = extra
        self.nodes = NodeProcesses({i: f"{host}:{base_port + i - 1}" for i in range(1, n + 1)}, data_dir,
                                   cluster_id=cluster_id, sync=sync, extra=extra, pipe_output=True)
        self.addresses = self.nodes.addresses
        self.peers = self.nodes.peers
        self.procs = self.nodes.procs
        self._lock = threading.Lock()
        self._exited = threading.Event()

    def start(self) -> None:
        """Start every node: print `[node i] pid P, HOST:PORT, DIR` (to kill one for a failover), then its log.

        Each log line is printed as `[node i] ...`.
        """
        for i, address in self.addresses.items():
            proc = self.nodes.start(i)
            self._print(f"[node {i}] pid {proc.pid}, {address}, {os.path.join(self.data_dir, f'node{i}')}")
            threading.Thread(target=self._pump, args=(i, proc), daemon=True).start()

    def _pump(self, node_id: int, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._print(f"[node {node_id}] {_strip_time(line.rstrip())}")
        code = proc.wait()
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        self._print(f"[node {node_id}] process {proc.pid} {how}")
        self._exited.set()

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, file=self.out, flush=True)

    def wait(self, should_stop: Callable[[], bool] = lambda: False) -> Optional[int]:
        """Block until should_stop() (None), a node fails on its own (its id), or every node is gone (0).

        A node killed by a signal (e.g. `kill -9` to watch a failover) is reported and the
        others keep running; a node exiting with an error status (bad port, bad data dir)
        stops the cluster, since it will not come back by itself.
        """
        while not should_stop():
            if self._exited.wait(0.2):
                self._exited.clear()
                codes = {i: p.poll() for i, p in self.procs.items()}
                for i, code in codes.items():
                    if code is not None and code > 0:
                        return i
                if all(code is not None for code in codes.values()):
                    return 0
        return None

    def stop(self) -> None:
        """SIGTERM every node, SIGKILL whoever is still there after the grace period, reap all."""
        self.nodes.stop()


def _strip_time(line: str) -> str:
    """Drop the `YYYY-MM-DD HH:MM:SS,mmm ` prefix of the child's log format, keep the time of day."""
    if len(line) > 24 and line[4] == "-" and line[10] == " ":
        return line[11:]
    return line
