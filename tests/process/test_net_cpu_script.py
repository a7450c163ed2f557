"""bench/net_cpu.py runs a tiny bench end to end: every process's CPU per request, and entries per transaction.

No figure is asserted (speed is measured, not tested): only that the run verified and the
summary names the leader, each node, the load generator and each node's transactions.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

from raftlog.bench.config import BenchConfig

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "net_cpu.py")


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("net_cpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_tiny_run_reports_every_process_and_restores_the_bench(tmp_path) -> None:
    script = load_script()
    from raftlog.bench.cluster import BenchCluster
    before = (BenchCluster.mark_cpu, BenchCluster.read_cpu, BenchCluster.statuses)
    result = script.measure(BenchConfig(duration=0.5, warmup=0.2, clients=2, inflight=4, batch=1,
                                        data=str(tmp_path / "bench")))
    assert result["verified"] is True, result
    assert result["leader"] in (1, 2, 3), result
    assert set(result["us_per_request"]) == {"1", "2", "3", "load"}, result
    assert result["us_per_request"]["load"] > 0, result          # the load generator's own CPU was read
    assert set(result["entries_per_write"]) == {"1", "2", "3"}, result
    assert all(v >= 1 for v in result["entries_per_write"].values()), result
    assert "us CPU/request: leader" in script.line(result)
    assert (BenchCluster.mark_cpu, BenchCluster.read_cpu, BenchCluster.statuses) == before
