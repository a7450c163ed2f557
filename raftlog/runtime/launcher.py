"""Local `raftlog node` processes by node id: start, signal, stop and reap them; none outlives its parent.

One launcher serves `raftlog cluster`, `raftlog bench` and the process tests. Node i runs
`python -m raftlog node --id i` on its own data dir, listening on `addresses[i]`, with the
members' addresses (`--peers`) or, joining a running cluster, `--listen` and `--join`. A
per-node command prefix runs it elsewhere: `ip netns exec NS` puts it in a network namespace
(that command execs, so the process and its PID are the node's own).

Every child runs in its own session, so a terminal's Ctrl-C reaches only the parent, which
then stops the nodes in order (SIGTERM, SIGKILL after a grace period). The kernel sends a
child SIGTERM when the thread that started it exits (PR_SET_PDEATHSIG): start nodes from a
thread that lives as long as they should (the main thread, in every caller here).
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

GRACE_SECONDS = 5.0          # SIGTERM -> SIGKILL
REAP_SECONDS = 10.0          # how long close() waits for a SIGKILLed process to be reaped


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports that are free right now (held open together while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ports_free(base: int, n: int) -> bool:
    """True when loopback ports `base` .. `base + n - 1` can all be bound now (`raftlog cluster --base-port`)."""
    socks = []
    try:
        for port in range(base, base + n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM this child when the thread that started it exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)     # PR_SET_PDEATHSIG
    except Exception:
        pass


def node_command(node_id: int, data_dir: str, *, cluster_id: str, peers: Optional[str] = None,
                 listen: Optional[str] = None, join: Optional[str] = None, sync: bool = True, verbosity: int = 1,
                 extra: Sequence[str] = ()) -> list[str]:
    """The argv of one `raftlog node`: with `peers` (the members), or `listen` and `join` (a new member).

    `verbosity` is the -v count: 1 logs events (INFO), 2 also DEBUG lines.
    """
    cmd = [sys.executable, "-m", "raftlog"] + (["-" + "v" * verbosity] if verbosity else []) + [
        "node", "--id", str(node_id), "--data", data_dir]
    if peers is not None:
        cmd += ["--peers", peers]
    if listen is not None:
        cmd += ["--listen", listen]
    if join is not None:
        cmd += ["--join", join]
    cmd += ["--cluster-id", cluster_id]
    if not sync:
        cmd.append("--no-sync")
    return cmd + list(extra)


class NodeProcesses:
    """Node processes by id: `stop()` shuts the current ones down, `close()` kills and reaps every one ever started.

    `addresses` (id -> host:port) are the members; node i's data dir is ROOT/node{i} and its
    output goes to ROOT/node{i}.log (appended: a restarted node adds to the same file), or,
    with `pipe_output`, to a text pipe (`procs[i].stdout`) for the caller to read.
    `args[i]` are extra arguments and `prefix[i]` a command prefix for node i; `env` is the
    nodes' environment (this process's when None).
    """

    def __init__(self, addresses: Mapping[int, str], root: str, *, cluster_id: str, sync: bool = True,
                 verbosity: int = 1, extra: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
                 pipe_output: bool = False) -> None:
        self.addresses = dict(addresses)
        self.root = root
        self.cluster_id = cluster_id
        self.sync = sync
        self.verbosity = verbosity
        self.args: dict[int, list[str]] = {i: list(extra) for i in self.addresses}
        self.prefix: dict[int, list[str]] = {}
        self.env = None if env is None else dict(env)
        self.pipe_output = pipe_output
        self.procs: dict[int, subprocess.Popen] = {}      # the latest process of each node
        self.all_procs: list[subprocess.Popen] = []       # every process started (close() reaps them all)
        self.paused: set[int] = set()

    @property
    def peers(self) -> str:
        """The members as `--peers` takes them: `1=host:port,2=host:port,...`."""
        return ",".join(f"{i}={a}" for i, a in self.addresses.items())

    def data_dir(self, i: int) -> str:
        """Node i's data dir."""
        return os.path.join(self.root, f"node{i}")

    def log_path(self, i: int) -> str:
        """The file node i's output is appended to (unless `pipe_output`)."""
        return os.path.join(self.root, f"node{i}.log")

    def command(self, i: int, join: Optional[str] = None) -> list[str]:
        """Node i's argv: a member started with `--peers`, or with `join` (an address) a joiner."""
        membership = {"peers": self.peers} if join is None else {"listen": self.addresses[i], "join": join}
        return self.prefix.get(i, []) + node_command(i, self.data_dir(i), cluster_id=self.cluster_id, sync=self.sync,
                                                     verbosity=self.verbosity, extra=self.args.get(i, ()),
                                                     **membership)

    def start(self, i: int, join: Optional[str] = None) -> subprocess.Popen:
        """Start node i (again, after it exited: over the same data dir); `join`: see command()."""
        cmd = self.command(i, join)
        common: dict[str, Any] = dict(stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=self.env,
                                      start_new_session=True, preexec_fn=die_with_parent)
        if self.pipe_output:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1, **common)
        else:
            with open(self.log_path(i), "ab") as log:
                proc = subprocess.Popen(cmd, stdout=log, **common)
        self.procs[i] = proc
        self.all_procs.append(proc)
        self.paused.discard(i)
        return proc

    def start_all(self) -> None:
        """Start every member."""
        for i in self.addresses:
            self.start(i)

    def signal(self, i: int, sig: int) -> None:
        """Send node i's process `sig` (SIGSTOP and SIGCONT are tracked in `paused`)."""
        self.procs[i].send_signal(sig)
        if sig == signal.SIGSTOP:
            self.paused.add(i)
        elif sig == signal.SIGCONT:
            self.paused.discard(i)

    def pause(self, i: int) -> None:
        """SIGSTOP node i: it runs nothing until resume()."""
        self.signal(i, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        """SIGCONT node i."""
        self.signal(i, signal.SIGCONT)

    def kill(self, i: int) -> int:
        """SIGKILL node i (paused or not) and reap it; its exit status."""
        proc = self.procs[i]
        proc.kill()
        self.paused.discard(i)
        return proc.wait(REAP_SECONDS)

    def stop(self, ids: Optional[Iterable[int]] = None, grace: float = GRACE_SECONDS) -> None:
        """SIGTERM nodes `ids` (all by default) together, SIGKILL whoever is still there after `grace`, reap all.

        A clean shutdown flushes the node's last hard state; a paused node is resumed first so
        that it can.
        """
        procs = [(i, self.procs[i]) for i in (self.procs if ids is None else ids) if i in self.procs]
        for i, proc in procs:
            if proc.poll() is None:
                try:
                    if i in self.paused:
                        proc.send_signal(signal.SIGCONT)
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
            self.paused.discard(i)
        deadline = time.monotonic() + grace
        for _, proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait(self, i: int, timeout: Optional[float] = None) -> int:
        """Node i's exit status once its process has exited (subprocess.TimeoutExpired after `timeout`)."""
        return self.procs[i].wait(timeout)

    def close(self) -> None:
        """SIGKILL every process ever started here that still runs (resumed first, in case it was paused), reap all."""
        for proc in self.all_procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                except ProcessLookupError:
                    pass
            try:
                proc.wait(REAP_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        self.paused.clear()
