"""Clusters of real `raftlog node` processes for the tests: the product's launcher plus what tests ask of it.

`ProcCluster` is raftlog.runtime.launcher.NodeProcesses on free loopback ports with clients,
statuses, the leader, and each node's stored state (`raftlog inspect`); `MemberCluster`
adds nodes that join a running cluster by address. Every process started is SIGKILLed by
PID in `close()`.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Optional, TypeVar

from raftlog.client import Client, query_status
from raftlog.runtime.launcher import NodeProcesses, free_ports
from support.polling import NotYet, wait_for
from support.safety import assert_committed_prefixes_agree

CLUSTER_ID = "proc-test"
C = TypeVar("C", bound="ProcCluster")


def agreed_leader(statuses: Mapping[int, Optional[dict]], size: int, above_term: int = 0) -> Optional[tuple[int, int]]:
    """(leader id, term) of the newest leader at a term > above_term if more than size // 2 statuses agree on it."""
    sts = [s for s in statuses.values() if s is not None]
    leaders = [(s["term"], i) for i, s in statuses.items() if s is not None and s["role"] == "leader"
               and s["term"] > above_term]
    if not leaders:
        return None
    term, lid = max(leaders)
    agree = sum(1 for s in sts if s["term"] == term and s.get("leader") == lid)
    return (lid, term) if agree > size // 2 else None


def inspect_json(data_dir: str, *args: str, timeout: float = 60) -> dict:
    """`raftlog inspect DIR --json [args]` of a stopped (or running) node's data dir."""
    out = subprocess.run([sys.executable, "-m", "raftlog", "inspect", data_dir, "--json", *args],
                         capture_output=True, text=True, timeout=timeout, check=True)
    return json.loads(out.stdout)


class ProcCluster(NodeProcesses):
    """N nodes, 1..N, on free loopback ports (or the given `addresses`), data and logs in ROOT.

    `verbosity` is the nodes' -v count: 1 logs events (INFO), 2 also DEBUG lines; `extra` are
    every node's extra arguments (`args[i]` changes node i's); `security` holds the client
    side's TLS or shared-secret settings (keyword arguments of Client and query_status).
    """

    def __init__(self, n: int, root: str, verbosity: int = 1, *, addresses: Optional[Mapping[int, str]] = None,
                 cluster_id: str = CLUSTER_ID, extra: Sequence[str] = (),
                 security: Optional[dict[str, Any]] = None) -> None:
        if addresses is None:
            ports = free_ports(n)
            addresses = {i: f"127.0.0.1:{ports[i - 1]}" for i in range(1, n + 1)}
        super().__init__(addresses, root, cluster_id=cluster_id, verbosity=verbosity, extra=extra)
        self.n = n
        self.security = security or {}

    def client(self, ids: Optional[list[int]] = None, **kw: Any) -> Client:
        """A Client of the members `ids` (all by default); 20 s timeout unless `timeout` is given."""
        ids = ids or list(self.addresses)
        return Client([self.addresses[i] for i in ids], cluster_id=self.cluster_id, timeout=kw.pop("timeout", 20.0),
                      **{**self.security, **kw})

    def statuses(self, ids: Optional[list[int]] = None) -> dict[int, Optional[dict]]:
        """Every member's status, asked in-process in parallel (fast polling; None = no answer)."""
        ids = ids or list(self.addresses)

        async def ask() -> list:
            return await asyncio.gather(*(query_status(self.addresses[i], cluster_id=self.cluster_id, timeout=1.0,
                                                       **self.security) for i in ids))
        return dict(zip(ids, asyncio.run(ask())))

    def leader(self, ids: Optional[list[int]] = None, above_term: int = 0) -> Optional[tuple[int, int]]:
        """(leader id, term) if a member of `ids` is leader at a term > above_term and a majority agree."""
        return agreed_leader(self.statuses(ids), self.n, above_term)

    def inspect(self, i: int) -> dict:
        """Node i's stored state and entries (`raftlog inspect --json`)."""
        return inspect_json(self.data_dir(i))

    def durable(self, i: int) -> tuple[int, int]:
        """(last index, term) stored in node i's data dir."""
        d = inspect_json(self.data_dir(i), "--from", "1", "--to", "1", timeout=30)
        return d["last_index"], d["term"]

    def log_of(self, i: int) -> str:
        """Everything node i has logged so far (all its runs: restarts append to the same file)."""
        with open(self.log_path(i), errors="replace") as f:
            return f.read()


class MemberCluster(ProcCluster):
    """ProcCluster plus nodes that join a running cluster by address, and the membership commands."""

    def add_address(self, i: int) -> None:
        """Give a new node id a free loopback address (it becomes a member once it has joined)."""
        self.addresses[i] = f"127.0.0.1:{free_ports(1)[0]}"

    def start_joiner(self, i: int, via: int, *extra: str) -> None:
        """Start node i with `--join` through member `via` (and `extra` arguments)."""
        self.args[i] = list(extra)
        self.start(i, join=self.addresses[via])

    def cli(self, *args: str, via: list[int], timeout: float = 30) -> subprocess.CompletedProcess:
        """`raftlog COMMAND --peers <via> --cluster-id ... ARGS...` for args = (COMMAND, *ARGS)."""
        peers = ",".join(self.addresses[i] for i in via)
        return subprocess.run([sys.executable, "-m", "raftlog", *args[:1], "--peers", peers, "--cluster-id",
                               self.cluster_id, *args[1:]], capture_output=True, text=True, timeout=timeout)

    def members(self, via: list[int]) -> list[dict]:
        """The member table, asked through `via`; NotYet when no member could answer (no leader, down)."""
        out = self.cli("members", "--json", via=via)
        if out.returncode != 0:
            raise NotYet(f"raftlog members failed: {out.stderr.strip()}")
        return json.loads(out.stdout)

    def voters(self, via: list[int]) -> set[int]:
        """Ids of the voters in the member table."""
        return {m["id"] for m in self.members(via) if m["voter"]}

    def leader_of(self, ids: list[int]) -> Optional[tuple[int, int]]:
        """(leader id, term) when a member of `ids` leads and a majority of `ids` agree."""
        return agreed_leader(self.statuses(ids), len(ids))


@contextlib.contextmanager
def clusters(root: str, kind: type[C]) -> Iterator[Callable[[int], C]]:
    """make(n) -> a new `kind` of n nodes in `root`; every cluster made is closed on exit."""
    made: list[C] = []

    def make(n: int) -> C:
        cluster = kind(n, root)
        made.append(cluster)
        return cluster
    try:
        yield make
    finally:
        for cluster in made:
            cluster.close()


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
