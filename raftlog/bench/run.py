"""One `raftlog bench` run from start to end: members up, load, measurements, verification, cleanup."""
from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import signal
import tempfile
from importlib import metadata
from typing import Any, Callable, Optional

from raftlog.bench.cluster import BenchCluster
from raftlog.bench.config import BenchConfig
from raftlog.bench.embedded_cluster import EmbeddedCluster
from raftlog.bench.embedded_load import EmbeddedLoad
from raftlog.bench.load import LoadDriver
from raftlog.bench.procfs import ProcessUsage
from raftlog.bench.progress import Progress
from raftlog.bench.report import summarize
from raftlog.bench.verify import verify
from raftlog.hot import IMPLEMENTATION

STARTUP_TIMEOUT = 30.0        # seconds for the nodes to start and elect a leader
CATCHUP_TIMEOUT = 30.0        # seconds for followers to apply everything before verifying
MAX_REQUEST_BYTES = 4 << 20   # the service's limit on one Append (runtime/server.py)


def run_bench(cfg: BenchConfig, *, progress: Optional[Progress] = None) -> dict[str, Any]:
    """Run one benchmark (see the package docstring); the JSON summary, with `verified` and a `detail`.

    Every node process is stopped (every embedded member closed) whatever happens, also on
    KeyboardInterrupt, and the data dirs and node logs are removed unless `cfg.keep`.
    `progress` is told about the run as it goes (setup notes, samples, the window).
    """
    progress = progress or Progress()
    if cfg.embedded and cfg.impl != IMPLEMENTATION:
        how = "with RAFTLOG_PURE=1" if cfg.impl == "python" else "without RAFTLOG_PURE"
        raise ValueError(f"--embedded runs the members in this process, whose hot path is {IMPLEMENTATION}; "
                         f"for {cfg.impl} start it {how}")
    if not cfg.embedded and cfg.batch * (cfg.payload + 17) > MAX_REQUEST_BYTES:
        raise ValueError(f"--batch {cfg.batch} of {cfg.payload} B payloads exceeds one request's "
                         f"{MAX_REQUEST_BYTES} B limit")
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    created = cfg.data is None
    if cfg.data is None:
        root = tempfile.mkdtemp(prefix="raftlog-bench-")
    else:
        root = os.path.abspath(cfg.data)
        os.makedirs(root, exist_ok=True)
        if os.listdir(root):
            raise ValueError(f"--data {cfg.data}: not empty")
    remove_files: Optional[Callable[[], None]] = None
    try:
        if cfg.embedded:
            members = EmbeddedCluster(cfg, root)
            remove_files = members.remove_files
            appenders = EmbeddedLoad(cfg, members, progress)
            result = asyncio.run(_drive_embedded(cfg, members, appenders, progress, started_at))
            data_dirs, stats, pools = members.data_dirs, appenders.stats, appenders.pools
        else:
            cluster = BenchCluster(cfg, root)
            remove_files = cluster.remove_files
            try:
                cluster.start()
                driver = LoadDriver(cfg, cluster.addresses, progress, ssl_context=cluster.ssl_context,
                                    security=cluster.security)
                result = asyncio.run(_drive(cfg, cluster, driver, progress, started_at))
            finally:
                cluster.stop()
            data_dirs = {i: cluster.nodes.data_dir(i) for i in cluster.addresses}
            stats, pools = driver.stats, driver.pools
        ok, detail = verify(data_dirs, stats, pools)
        result["verified"] = ok
        result["detail"] = detail
        return result
    finally:
        progress.close()
        if created and not cfg.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif not cfg.keep and remove_files is not None:
            remove_files()
        if cfg.keep:
            progress.note(f"data kept in {root}")


def bench_version() -> str:
    """The installed raftlog's version ('unknown' when run from a tree that was never installed)."""
    try:
        return metadata.version("raftlog")
    except metadata.PackageNotFoundError:
        return "unknown"


async def _drive(cfg: BenchConfig, cluster: BenchCluster, driver: LoadDriver, progress: Progress,
                 started_at: str) -> dict[str, Any]:
    """Wait for a leader, drive the load while sampling the nodes, wait for followers to catch up; the result."""
    leader, term0 = await cluster.wait_for_leader(STARTUP_TIMEOUT)
    progress.note(f"{cfg.nodes} nodes up, node {leader} leads; load: {cfg.clients} clients x {cfg.inflight} in "
                  f"flight x {cfg.batch} payloads of {cfg.payload} B"
                  + (f", open loop at {cfg.rate:,.0f} entries/s" if cfg.rate else ""))
    bench_usage = ProcessUsage(os.getpid())
    sampling = True

    async def sampler() -> None:
        while sampling:
            cluster.sample()
            bench_usage.sample()
            cluster.check_alive()
            await asyncio.sleep(progress.period)

    def start() -> None:
        cluster.mark_cpu()
        bench_usage.mark_cpu()

    def end() -> None:
        cluster.read_cpu()
        bench_usage.read_cpu()

    sampler_task = asyncio.get_running_loop().create_task(sampler())
    warmup = cfg.warmup if cfg.count is None else 0.0
    try:
        seconds = await driver.run(cluster.addresses[leader], warmup, on_start=start, on_end=end)
    finally:
        sampling = False
        await sampler_task
    cluster.sample()
    bench_usage.sample()
    st = await cluster.statuses()
    term1 = max([s["term"] for s in st.values() if s is not None] or [term0])
    await cluster.wait_caught_up(CATCHUP_TIMEOUT)
    return summarize(cfg, driver.stats, seconds, term1 - term0, cluster.usage, bench_usage,
                     version=bench_version(), started_at=started_at)


async def _drive_embedded(cfg: BenchConfig, members: EmbeddedCluster, appenders: EmbeddedLoad, progress: Progress,
                          started_at: str) -> dict[str, Any]:
    """Start the members, drive the appenders while sampling this process, let followers catch up, close; the result.

    The members are closed whatever happens (each saves its last hard state), so their data
    dirs can be verified afterwards.
    """
    try:
        await members.start()
        leader, term0 = await members.wait_for_leader(STARTUP_TIMEOUT)
        what = "1 member (no network)" if cfg.nodes == 1 else f"{cfg.nodes} members on loopback, node {leader} leads"
        call = "append()" if cfg.batch == 1 else f"append_many() of {cfg.batch}"
        who = "1 appender" if cfg.clients == 1 else f"{cfg.clients} appenders"
        progress.note(f"embedded: {what}; load: {who} x {call} of {cfg.payload} B in this process")
        usage = members.usage
        sampling = True

        async def sampler() -> None:
            while sampling:
                usage.sample()
                await asyncio.sleep(progress.period)

        sampler_task = asyncio.get_running_loop().create_task(sampler())
        warmup = cfg.warmup if cfg.count is None else 0.0
        try:
            seconds = await appenders.run(warmup, on_start=usage.mark_cpu, on_end=usage.read_cpu)
        finally:
            sampling = False
            await sampler_task
        usage.sample()
        term1 = members.term()
        await members.wait_caught_up(CATCHUP_TIMEOUT)
        return summarize(cfg, appenders.stats, seconds, term1 - term0, {}, usage, version=bench_version(),
                         started_at=started_at)
    finally:
        await members.close()


def main_with_signals(fn: Callable[[], Any]) -> Any:
    """Run fn with SIGTERM turned into KeyboardInterrupt, so cleanup runs on either."""
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, on_term)
    try:
        return fn()
    finally:
        signal.signal(signal.SIGTERM, old)
