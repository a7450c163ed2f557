"""End to end, in one process: a 3-node cluster in one event loop over real loopback sockets, fsync on.

Run:  python -m pytest bench/test_bench_e2e.py --benchmark-only
Save a baseline, then compare a later run against it:

    python -m pytest bench/test_bench_e2e.py --benchmark-only --benchmark-save=before
    python -m pytest bench/test_bench_e2e.py --benchmark-only --benchmark-compare=0001_before

Both hot-path implementations run in the same session: the `raftlog` modules written in
Python are imported afresh for each implementation with RAFTLOG_PURE set accordingly (the
compiled extension modules stay loaded; only which of them the facade picks changes), so a
group pairs the Cython and the pure-Python cluster the way bench/test_bench_hot.py does.

Unlike `raftlog bench` (separate node processes), the three nodes and the load share one
interpreter and one GIL here: the numbers are lower and show the CPU cost of the whole path
(client codec, service, engine, transport, storage) rather than the machine's parallelism.
"""
from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import sys
import tempfile
from types import SimpleNamespace

import pytest

IMPLS = ["cython", "python"]
ENTRIES_PER_ROUND = 20_000


def import_impl(impl: str) -> SimpleNamespace:
    """Fresh imports of the runtime with the hot path `impl` (pure-Python raftlog modules reloaded)."""
    for name in [m for m in sys.modules if m == "raftlog" or m.startswith("raftlog.")]:
        if str(getattr(sys.modules[name], "__file__", "")).endswith(".py"):
            del sys.modules[name]
    old = os.environ.get("RAFTLOG_PURE")
    os.environ["RAFTLOG_PURE"] = "1" if impl == "python" else "0"
    try:
        hot = importlib.import_module("raftlog.hot")
        node = importlib.import_module("raftlog.runtime.node")
        client = importlib.import_module("raftlog.client")
        config = importlib.import_module("raftlog.bench.config")
        load = importlib.import_module("raftlog.bench.load")
        launcher = importlib.import_module("raftlog.runtime.launcher")
    finally:
        if old is None:
            os.environ.pop("RAFTLOG_PURE", None)
        else:
            os.environ["RAFTLOG_PURE"] = old
    if hot.IMPLEMENTATION != impl:
        pytest.skip(f"the {impl} hot path is not available")
    return SimpleNamespace(hot=hot, node=node, client=client, config=config, load=load, launcher=launcher)


class InProcessCluster:
    """N Node objects in one event loop, each on its own loopback port."""

    def __init__(self, mods: SimpleNamespace, n: int = 3) -> None:
        self.mods = mods
        self.loop = asyncio.new_event_loop()
        self.root = tempfile.mkdtemp(prefix="raftlog-e2e-")
        ports = mods.launcher.free_ports(n)
        self.peers = {i: f"127.0.0.1:{ports[i - 1]}" for i in range(1, n + 1)}
        self.nodes = [mods.node.Node(mods.node.NodeConfig(node_id=i, peers=self.peers,
                                                          data_dir=os.path.join(self.root, f"node{i}"),
                                                          cluster_id=mods.config.CLUSTER_ID))
                      for i in self.peers]
        self.run(self._start())

    def run(self, coro):  # noqa: ANN001, ANN201
        return self.loop.run_until_complete(coro)

    async def _start(self) -> None:
        for node in self.nodes:
            await node.start()
        for _ in range(400):
            leaders = {n.leader_id for n in self.nodes}
            if len(leaders) == 1 and 0 not in leaders:
                return
            await asyncio.sleep(0.01)
        raise RuntimeError("no leader elected")

    @property
    def leader_address(self) -> str:
        return self.peers[self.nodes[0].leader_id]

    def close(self) -> None:
        async def stop() -> None:
            for node in self.nodes:
                await node.stop()
        try:
            self.run(stop())
        finally:
            self.loop.close()
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module", params=IMPLS)
def cluster(request: pytest.FixtureRequest):  # noqa: ANN201
    c = InProcessCluster(import_impl(request.param))
    c.impl = request.param
    yield c
    c.close()


def test_e2e_pipelined_appends(benchmark, cluster: InProcessCluster) -> None:
    """20,000 entries of 100 B committed: 4 connections x 4 requests in flight x 256 payloads."""
    benchmark.group = f"e2e: {ENTRIES_PER_ROUND:,} appends, 4 x 4 x 256, 3 nodes, fsync"
    mods = cluster.mods
    cfg = mods.config.BenchConfig(count=ENTRIES_PER_ROUND, clients=4, inflight=4, batch=256, warmup=0)

    def one_round() -> int:
        driver = mods.load.LoadDriver(cfg, cluster.peers)
        cluster.run(driver.run(cluster.leader_address, 0.0))
        return driver.stats.entries

    entries = benchmark.pedantic(one_round, rounds=5, iterations=1, warmup_rounds=1)
    assert entries >= ENTRIES_PER_ROUND
    benchmark.extra_info["impl"] = cluster.impl
    benchmark.extra_info["entries_per_round"] = ENTRIES_PER_ROUND


def test_e2e_single_append(benchmark, cluster: InProcessCluster) -> None:
    """One client, one 100-byte append at a time: the commit latency of a lone request."""
    benchmark.group = "e2e: one append of 100 B, one in flight, 3 nodes, fsync"
    client = cluster.mods.client.AsyncClient(list(cluster.peers.values()), cluster_id=cluster.mods.config.CLUSTER_ID)
    payload = b"x" * 100
    cluster.run(client.append(payload))      # connect and find the leader first

    index = benchmark.pedantic(lambda: cluster.run(client.append(payload)), rounds=200, iterations=1)
    assert index > 0
    cluster.run(client.close())
    benchmark.extra_info["impl"] = cluster.impl
