"""The cluster under test: N `raftlog node` processes on free loopback ports, their state over the wire."""
from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import time
from typing import Any, Optional

from raftlog.bench.config import CLUSTER_ID, BenchConfig, BenchError
from raftlog.bench.procfs import ProcessUsage
from raftlog.runtime.launcher import NodeProcesses, free_ports


class BenchCluster:
    """The nodes of one run (launched by NodeProcesses in ROOT), measured from /proc; `stop()` leaves none behind.

    With `cfg.tls`, start() makes a throw-away CA in ROOT/pki; `security` then holds the
    client side's TLS settings (keyword arguments of the client calls) and `ssl_context`
    the context load connections use.
    """

    def __init__(self, cfg: BenchConfig, root: str) -> None:
        self.cfg = cfg
        self.root = root
        ports = free_ports(cfg.nodes)
        self.nodes = NodeProcesses({i: f"127.0.0.1:{ports[i - 1]}" for i in range(1, cfg.nodes + 1)}, root,
                                   cluster_id=CLUSTER_ID, sync=cfg.sync, env=node_environment(cfg.impl))
        self.addresses = self.nodes.addresses
        self.usage: dict[int, ProcessUsage] = {}
        self.security: dict[str, Any] = {}
        self.ssl_context: Optional[ssl.SSLContext] = None

    def start(self) -> None:
        """Start every node (each logging to ROOT/nodeI.log)."""
        if self.cfg.tls:
            from raftlog.wire.tls import make_dev_pki
            node_tls, client_tls = make_dev_pki(os.path.join(self.root, "pki"))
            self.security = {"tls": client_tls}
            self.ssl_context = client_tls.client_context()
            for args in self.nodes.args.values():
                args += ["--tls-cert", node_tls.cert, "--tls-key", node_tls.key, "--tls-ca", node_tls.ca]
        for i in self.addresses:
            self.usage[i] = ProcessUsage(self.nodes.start(i).pid)

    def check_alive(self) -> None:
        """BenchError naming the first node process that has exited, with the end of its log."""
        for i, proc in self.nodes.procs.items():
            code = proc.poll()
            if code is not None:
                raise BenchError(f"node {i} exited with status {code}:\n{tail(self.nodes.log_path(i))}")

    def sample(self) -> None:
        """Record every node's current RSS (for the flatness check) and peak RSS."""
        for usage in self.usage.values():
            usage.sample()

    def mark_cpu(self) -> None:
        """Start of the measured window for CPU seconds."""
        for usage in self.usage.values():
            usage.mark_cpu()

    def read_cpu(self) -> None:
        """End of the measured window for CPU seconds."""
        for usage in self.usage.values():
            usage.read_cpu()

    def stop(self) -> None:
        """SIGTERM every node (a clean shutdown flushes its last hard state), SIGKILL after the grace period."""
        self.nodes.stop()

    def remove_files(self) -> None:
        """Delete every started node's data dir and log."""
        for i in self.nodes.procs:
            shutil.rmtree(self.nodes.data_dir(i), ignore_errors=True)
            try:
                os.unlink(self.nodes.log_path(i))
            except OSError:
                pass

    async def statuses(self) -> dict[int, Optional[dict]]:
        """Every member's status (None for one that does not answer)."""
        from raftlog.client import query_status
        got = await asyncio.gather(*(query_status(a, cluster_id=CLUSTER_ID, timeout=1.0, **self.security)
                                     for a in self.addresses.values()))
        return dict(zip(self.addresses, got))

    async def wait_for_leader(self, timeout: float) -> tuple[int, int]:
        """(leader id, term) once every member follows one leader that is connected to all of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            st = await self.statuses()
            if all(s is not None for s in st.values()):
                leaders = {s["leader"] for s in st.values()}  # type: ignore[index]
                if len(leaders) == 1 and None not in leaders:
                    lead = leaders.pop()
                    ls = st[lead]
                    assert ls is not None
                    if ls["role"] == "leader" and set(ls["connected"]) >= set(self.addresses) - {lead}:
                        return lead, max(s["term"] for s in st.values())  # type: ignore[index]
            await asyncio.sleep(0.05)
        raise BenchError(f"no leader within {timeout:g} s")

    async def wait_caught_up(self, timeout: float) -> dict[int, Optional[dict]]:
        """Wait until every member has applied the leader's commit index; the last statuses seen."""
        deadline = time.monotonic() + timeout
        st: dict[int, Optional[dict]] = {}
        while time.monotonic() < deadline:
            st = await self.statuses()
            alive = [s for s in st.values() if s is not None]
            if len(alive) == len(self.addresses):
                commit = max(s["commit"] for s in alive)
                if all(s["applied"] >= commit for s in alive):
                    return st
            await asyncio.sleep(0.05)
        return st


def node_environment(impl: str) -> dict[str, str]:
    """This process's environment with the nodes' hot path set: RAFTLOG_PURE=1 (python) or required Cython."""
    env = dict(os.environ)
    env.pop("RAFTLOG_PURE", None)
    env.pop("RAFTLOG_REQUIRE_CYTHON", None)
    if impl == "python":
        env["RAFTLOG_PURE"] = "1"
    else:
        env["RAFTLOG_REQUIRE_CYTHON"] = "1"
    return env


def tail(path: str, lines: int = 15) -> str:
    """The last lines of a text file ('' if unreadable)."""
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except OSError:
        return ""
