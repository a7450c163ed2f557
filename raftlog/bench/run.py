"""One `raftlog bench` run from start to end: cluster up, load, measurements, verification, cleanup."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from typing import Any, Callable, Optional

from raftlog.bench.cluster import BenchCluster
from raftlog.bench.config import BenchConfig
from raftlog.bench.load import SAMPLE_SECONDS, LoadDriver
from raftlog.bench.report import summarize
from raftlog.bench.verify import verify

STARTUP_TIMEOUT = 30.0        # seconds for the nodes to start and elect a leader
CATCHUP_TIMEOUT = 30.0        # seconds for followers to apply everything before verifying
MAX_REQUEST_BYTES = 4 << 20   # the service's limit on one Append (runtime/server.py)


def run_bench(cfg: BenchConfig, *, progress: Optional[Callable[[int, int], None]] = None,
              note: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run one benchmark (see the package docstring); the JSON summary, with `verified` and a `detail`.

    Every node process is stopped whatever happens (also on KeyboardInterrupt), and the data
    dirs and node logs are removed unless `cfg.keep`.
    """
    if cfg.batch * (cfg.payload + 17) > MAX_REQUEST_BYTES:
        raise ValueError(f"--batch {cfg.batch} of {cfg.payload} B payloads exceeds one request's "
                         f"{MAX_REQUEST_BYTES} B limit")
    created = cfg.data is None
    if cfg.data is None:
        root = tempfile.mkdtemp(prefix="raftlog-bench-")
    else:
        root = os.path.abspath(cfg.data)
        os.makedirs(root, exist_ok=True)
        if os.listdir(root):
            raise ValueError(f"--data {cfg.data}: not empty")
    cluster: Optional[BenchCluster] = None
    try:
        cluster = BenchCluster(cfg, root)
        cluster.start()
        driver = LoadDriver(cfg, cluster.addresses, progress or (lambda d, t: None),
                            ssl_context=cluster.ssl_context, security=cluster.security)
        result = asyncio.run(_drive(cfg, cluster, driver, note))
        cluster.stop()
        ok, detail = verify({i: cluster.nodes.data_dir(i) for i in cluster.addresses}, driver.stats, driver.pools)
        result["verified"] = ok
        result["detail"] = detail
        return result
    finally:
        if cluster is not None:
            cluster.stop()
        if created and not cfg.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif not cfg.keep and cluster is not None:
            cluster.remove_files()
        if cfg.keep:
            note(f"data kept in {root}")


async def _drive(cfg: BenchConfig, cluster: BenchCluster, driver: LoadDriver,
                 note: Callable[[str], None]) -> dict[str, Any]:
    """Wait for a leader, drive the load while sampling the nodes, wait for followers to catch up; the result."""
    leader, term0 = await cluster.wait_for_leader(STARTUP_TIMEOUT)
    note(f"{cfg.nodes} nodes up, node {leader} leads; load: {cfg.clients} clients x {cfg.inflight} in flight x "
         f"{cfg.batch} payloads of {cfg.payload} B" + (f", open loop at {cfg.rate:,.0f} entries/s" if cfg.rate else ""))
    sampling = True

    async def sampler() -> None:
        while sampling:
            cluster.sample()
            cluster.check_alive()
            await asyncio.sleep(SAMPLE_SECONDS)

    sampler_task = asyncio.get_running_loop().create_task(sampler())
    warmup = cfg.warmup if cfg.count is None else 0.0
    orig = driver.on_progress

    def mark(delta: int, total: int) -> None:
        if delta == -1:
            cluster.mark_cpu()
            return
        orig(delta, total)

    driver.on_progress = mark
    try:
        seconds = await driver.run(cluster.addresses[leader], warmup)
        cluster.read_cpu()
    finally:
        sampling = False
        await sampler_task
    cluster.sample()
    st = await cluster.statuses()
    term1 = max([s["term"] for s in st.values() if s is not None] or [term0])
    await cluster.wait_caught_up(CATCHUP_TIMEOUT)
    return summarize(cfg, driver.stats, seconds, term1 - term0, cluster.usage)


def main_with_signals(fn: Callable[[], Any]) -> Any:
    """Run fn with SIGTERM turned into KeyboardInterrupt, so cleanup runs on either."""
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, on_term)
    try:
        return fn()
    finally:
        signal.signal(signal.SIGTERM, old)
