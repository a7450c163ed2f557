"""The members of an `--embedded` run: `raftlog.open` logs in this process (with peers over loopback for several)."""
from __future__ import annotations

import asyncio
import os
import shutil
import time

from raftlog.bench.config import CLUSTER_ID, BenchConfig, BenchError
from raftlog.bench.procfs import ProcessUsage
from raftlog.embed import RaftLog
from raftlog.embed import open as open_log
from raftlog.runtime.launcher import free_ports


class EmbeddedCluster:
    """`cfg.nodes` RaftLogs on this event loop, data dirs ROOT/node{i}; this process measured from /proc.

    One member is a single-node log without network (`raftlog.open(dir)`); several are
    members with `peers` on loopback ports that were free a moment before, each listening on
    its own, as `raftlog.open(dir, node_id=i, peers=...)` builds them. The load appends to
    the leader's RaftLog directly: in-process, no client connection.
    """

    def __init__(self, cfg: BenchConfig, root: str) -> None:
        self.cfg = cfg
        self.root = root
        self.data_dirs = {i: os.path.join(root, f"node{i}") for i in range(1, cfg.nodes + 1)}
        self.logs: dict[int, RaftLog] = {}
        self.usage = ProcessUsage(os.getpid())
        self.leader: RaftLog       # the member the load appends to (set by wait_for_leader)

    async def start(self) -> None:
        """Open and start every member (all of them: a member that failed to start is closed again by close())."""
        if self.cfg.nodes == 1:
            self.logs[1] = open_log(self.data_dirs[1], sync=self.cfg.sync)
        else:
            ports = free_ports(self.cfg.nodes)
            peers = {i: f"127.0.0.1:{ports[i - 1]}" for i in self.data_dirs}
            for i, path in self.data_dirs.items():
                self.logs[i] = open_log(path, node_id=i, peers=peers, sync=self.cfg.sync, cluster_id=CLUSTER_ID)
        await asyncio.gather(*(log.start() for log in self.logs.values()))

    async def wait_for_leader(self, timeout: float) -> tuple[int, int]:
        """(leader id, term) once every member follows one member that leads; it becomes `leader`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = {log.leader_id for log in self.logs.values()}
            if len(leaders) == 1:
                lead = leaders.pop()
                if lead in self.logs and self.logs[lead].role == "leader":
                    self.leader = self.logs[lead]
                    return lead, self.term()
            await asyncio.sleep(0.01)
        raise BenchError(f"no leader within {timeout:g} s")

    def term(self) -> int:
        """The highest term any member has seen."""
        return max(log.term for log in self.logs.values())

    def sample(self) -> None:
        """Record this process's current RSS (for the flatness check) and peak RSS."""
        self.usage.sample()

    async def wait_caught_up(self, timeout: float) -> None:
        """Wait until every member has applied the highest commit index any member knows (or `timeout` passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            commit = max(log.commit_index for log in self.logs.values())
            if all(log.applied_index >= commit for log in self.logs.values()):
                return
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Close every member (each saves its last hard state); idempotent."""
        await asyncio.gather(*(log.close() for log in self.logs.values()), return_exceptions=True)

    def remove_files(self) -> None:
        """Delete every member's data dir."""
        for path in self.data_dirs.values():
            shutil.rmtree(path, ignore_errors=True)
