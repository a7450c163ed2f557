"""The load of an `--embedded` run: `clients` coroutines, each awaiting one append of `batch` entries at a time.

`--batch 1` calls `RaftLog.append`, a larger batch `RaftLog.append_many`. Payloads come from
the same pools as the process mode's (load.make_pool: distinct per client, tagged so that
verification can tell requests apart), decoded to bytes once at start-up; an append costs
the call itself, two clock reads and a few counters. A request's latency runs from the
call to its return (committed and durable).
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable, Optional

from raftlog.bench.config import BenchConfig, BenchError
from raftlog.bench.embedded_cluster import EmbeddedCluster
from raftlog.bench.load import POOL, make_pool
from raftlog.bench.progress import Progress
from raftlog.bench.stats import Stats
from raftlog.bench.window import measure_window
from raftlog.errors import NotLeader, Timeout

LEADER_TIMEOUT = 30.0          # seconds an appender waits for a new leader after NotLeader


class EmbeddedLoad:
    """Runs the appenders on this event loop against the cluster's leader; what they saw is in `stats`."""

    def __init__(self, cfg: BenchConfig, cluster: EmbeddedCluster, progress: Optional[Progress] = None) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.progress = progress or Progress()
        self.stats = Stats()
        self.pools = [make_pool(c, cfg.payload, cfg.batch, POOL) for c in range(cfg.clients)]
        self.payloads = [[[bytes(p) for _, _, _, p in batch.entries(1)] for batch in pool] for pool in self.pools]
        self.done = False
        self.failure: Optional[str] = None

    async def run(self, warmup: float, on_start: Callable[[], None] = lambda: None,
                  on_end: Callable[[], None] = lambda: None) -> float:
        """Drive load: warm-up, then the measured window; the window's length in seconds.

        Afterwards every appender finishes the call it awaits (answered or timed out), so
        every acknowledged append is in `stats.acks` for verification.
        """
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._appender(c)) for c in range(self.cfg.clients)]
        try:
            return await measure_window(self.cfg, self.stats, self.progress, warmup=warmup, check=self._check,
                                        on_start=on_start, on_end=on_end)
        finally:
            self.done = True
            await asyncio.gather(*tasks, return_exceptions=True)

    def _check(self) -> None:
        """BenchError when an appender failed in a way the run cannot go on from."""
        if self.failure is not None:
            raise BenchError(self.failure)

    async def _appender(self, client: int) -> None:
        """Append one pool request after another until the run is over, counting what each call returned."""
        stats = self.stats
        requests = self.payloads[client]
        acks = stats.acks
        latencies = stats.latencies
        clock = time.perf_counter
        single = self.cfg.batch == 1
        count = self.cfg.batch
        slot = 0
        while not self.done:
            slot = slot + 1 if slot + 1 < POOL else 0
            log = self.cluster.leader
            t = clock()
            try:
                if single:
                    first = await log.append(requests[slot][0])
                else:
                    first = (await log.append_many(requests[slot]))[0]
            except Timeout:
                stats.errors += 1
                stats.timeouts += 1
                continue
            except NotLeader:
                stats.errors += 1
                await self._follow_leader()
                continue
            except Exception as exc:        # (Closed, or a bug): the run cannot go on
                stats.errors += 1
                if self.failure is None and not self.done:
                    self.failure = f"append failed: {exc!r}"
                return
            now = clock()
            stats.total_entries += count
            stats.total_requests += 1
            # A plain int: a tuple holding an Appended (an int subclass with a __dict__) stays
            # tracked by the garbage collector, and walking 10^5 of them cost 1.4 µs per append.
            acks.append((int(first), client, slot))
            if stats.measuring:
                stats.entries += count
                stats.requests += 1
                latencies.append(now - t)

    async def _follow_leader(self) -> None:
        """After NotLeader: wait until the members agree on a leader again and append there."""
        try:
            await self.cluster.wait_for_leader(LEADER_TIMEOUT)
        except BenchError as exc:
            if self.failure is None:
                self.failure = str(exc)
