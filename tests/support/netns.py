"""Nodes on separate "hosts": each `raftlog node` in its own network namespace, and the faults
a real network has, made with iproute2, nftables and tc (all inside the test's namespaces).

Topology: a hub namespace holds a bridge; every node namespace, and one client namespace,
hangs off it by a veth pair and has its own address in 10.77.0.0/24. Nothing is added to the
host's own namespace, and the only addresses any traffic goes to are the namespaces' own.

Faults, each undone by `heal()`:
- `loss(i, pct)`: nftables in node i drops pct% of its outgoing TCP packets (numgen random);
- `bandwidth(i, rate)`: tc tbf on node i's interface (rate limit with queueing delay);
- `link(i, up)`: node i's interface down (a full partition of that host);
- `cut(i, j)`: a blackhole route in node i towards node j (one way; both ways = `cut` twice).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Optional

from support.cluster import ProcCluster, agreed_leader

SUBNET = "10.77.0"


def netns_unavailable() -> Optional[str]:
    """Why namespaces cannot be used here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    for tool in ("ip", "tc", "nft"):
        if shutil.which(tool) is None:
            return f"the {tool} command is not installed (.ci/run installs iproute2 and nftables)"
    probe = f"rl8probe{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class NetnsCluster(ProcCluster):
    """N nodes, one per namespace (each started through `ip netns exec`), a client namespace, and faults."""

    def __init__(self, n: int, root: str, cluster_id: str = "proc-test") -> None:
        self.tag = f"rl8{os.getpid() % 100000}"
        self.hub = f"{self.tag}hub"
        self.client_ns = f"{self.tag}cl"
        self.ns = {i: f"{self.tag}n{i}" for i in range(1, n + 1)}
        self.ip = {i: f"{SUBNET}.{10 + i}" for i in range(1, n + 1)}
        self.client_ip = f"{SUBNET}.2"
        super().__init__(n, root, addresses={i: f"{self.ip[i]}:7000" for i in self.ip}, cluster_id=cluster_id)
        self.prefix = {i: ["ip", "netns", "exec", name] for i, name in self.ns.items()}
        self.made: list[str] = []
        self.cuts: set[tuple[int, int]] = set()
        self.lossy: set[int] = set()
        self.shaped: set[int] = set()
        self.down: set[int] = set()

    def sh(self, *cmd: str, ns: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
        full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
        done = subprocess.run(full, capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(full)}: {done.stderr.strip()}")
        return done

    def _netns(self, name: str) -> None:
        self.sh("ip", "netns", "add", name)
        self.made.append(name)
        self.sh("ip", "link", "set", "lo", "up", ns=name)

    def _attach(self, name: str, ip: str, k: int) -> None:
        """A veth pair: eth0 with `ip` in namespace `name`, its peer on the hub's bridge."""
        self.sh("ip", "link", "add", f"v{k}", "netns", self.hub, "type", "veth", "peer", "name", "eth0",
                "netns", name, ns=self.hub)
        self.sh("ip", "link", "set", f"v{k}", "master", "br0", "up", ns=self.hub)
        self.sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", ns=name)
        self.sh("ip", "link", "set", "eth0", "up", ns=name)

    def setup(self) -> None:
        """Create the namespaces, the bridge and the links (undone by teardown())."""
        self._netns(self.hub)
        self.sh("ip", "link", "add", "br0", "type", "bridge", ns=self.hub)
        self.sh("ip", "link", "set", "br0", "up", ns=self.hub)
        self._netns(self.client_ns)
        self._attach(self.client_ns, self.client_ip, 0)
        for i, name in self.ns.items():
            self._netns(name)
            self._attach(name, self.ip[i], i)

    def teardown(self) -> None:
        """Kill every process started, delete every namespace made (their links go with them)."""
        self.close()
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.made.clear()

    def in_client_ns(self, *args: str, **kw: object) -> subprocess.Popen:
        """Start `args` (argv) inside the client namespace; close() kills it with the nodes."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.client_ns, *args], **kw)  # type: ignore[call-overload]
        self.all_procs.append(proc)
        return proc

    def loss(self, i: int, pct: int) -> None:
        """Drop pct% of node i's outgoing TCP packets, at random."""
        ns = self.ns[i]
        self.sh("nft", "add", "table", "inet", "rl8", ns=ns)
        self.sh("nft", "add", "chain", "inet", "rl8", "out", "{ type filter hook output priority 0; }", ns=ns)
        self.sh("nft", "add", "rule", "inet", "rl8", "out", "meta", "l4proto", "tcp", "numgen", "random", "mod",
                "100", "<", str(pct), "drop", ns=ns)
        self.lossy.add(i)

    def bandwidth(self, i: int, rate: str = "2mbit") -> None:
        """Shape node i's outgoing traffic with a token bucket (queueing delay up to 100 ms, then drops)."""
        self.sh("tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "32kbit",
                "latency", "100ms", ns=self.ns[i])
        self.shaped.add(i)

    def link(self, i: int, up: bool) -> None:
        """Node i's only interface up or down."""
        self.sh("ip", "link", "set", "eth0", "up" if up else "down", ns=self.ns[i])
        (self.down.discard if up else self.down.add)(i)

    def cut(self, i: int, j: int) -> None:
        """Node i can no longer send to node j (a blackhole route inside i)."""
        if (i, j) not in self.cuts:
            self.sh("ip", "route", "add", "blackhole", f"{self.ip[j]}/32", ns=self.ns[i])
            self.cuts.add((i, j))

    def split(self, *groups: list[int]) -> None:
        """Cut every pair of nodes in different groups, both ways."""
        for a in groups:
            for b in groups:
                if a is not b:
                    for i in a:
                        for j in b:
                            self.cut(i, j)

    def heal(self) -> None:
        """Undo every fault."""
        for i, j in sorted(self.cuts):
            self.sh("ip", "route", "del", "blackhole", f"{self.ip[j]}/32", ns=self.ns[i], check=False)
        self.cuts.clear()
        for i in sorted(self.lossy):
            self.sh("nft", "delete", "table", "inet", "rl8", ns=self.ns[i], check=False)
        self.lossy.clear()
        for i in sorted(self.shaped):
            self.sh("tc", "qdisc", "del", "dev", "eth0", "root", ns=self.ns[i], check=False)
        self.shaped.clear()
        for i in sorted(self.down):
            self.link(i, True)
        self.down.clear()


def read_jsonl(path: str) -> list[dict]:
    """Every complete JSON line of `path` (a line still being written is skipped)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.endswith("\n"):
                    out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


def leader_at(sample: dict, n: int) -> Optional[int]:
    """The leader in one watcher sample, if a majority of members agree on it (same term)."""
    found = agreed_leader({s["id"]: s for s in sample["statuses"] if s}, n)
    return found[0] if found else None


def wait_leader_since(path: str, n: int, since: float, timeout: float) -> Optional[float]:
    """Seconds from `since` (monotonic) to the first watcher sample after it that shows a leader, or None."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for s in read_jsonl(path):
            if s["t"] >= since and leader_at(s, n) is not None:
                return s["t"] - since
        time.sleep(0.1)
    return None
