"""`raftlog bench`: a short smoke run over real node processes (CI runs it; no timed assertion)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from raftlog.bench import JSON_KEYS

pytestmark = pytest.mark.process


def test_bench_smoke_json_verified(tmp_path):
    data = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "raftlog", "bench", "--duration", "2", "--json", "--data", str(data)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    out = json.loads(lines[0])
    assert set(out) == set(JSON_KEYS)
    assert set(out["latency_ms"]) == {"p50", "p90", "p99", "p999", "max"}
    assert out["nodes"] == 3 and out["payload"] == 100 and out["sync"] is True and out["impl"] == "cython"
    assert out["verified"] is True
    assert out["entries"] > 0 and out["entries_per_s"] > 0
    assert [n["id"] for n in out["per_node"]] == [1, 2, 3]
    assert all(set(n) == {"id", "cpu_s", "rss_mb"} and n["rss_mb"] > 0 for n in out["per_node"])
    assert out["requests"] > 0 and out["entries"] == out["requests"] * 512 and out["samples"] == out["requests"]
    assert out["requests_per_s"] > 0 and out["errors"] == 0 and out["timeouts"] == 0
    assert out["embedded"] is False and out["version"] and out["started_at"].endswith("+00:00")
    assert out["bench_process"]["cpu_s"] > 0 and out["bench_process"]["cpu_us_per_request"] > 0
    assert os.listdir(data) == []      # node dirs removed without --keep


def test_bench_rejects_a_request_over_the_limit():
    proc = subprocess.run([sys.executable, "-m", "raftlog", "bench", "--payload", "100000", "--batch", "100",
                           "--duration", "1"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "limit" in proc.stderr


def test_bench_open_loop_runs_and_verifies_every_acknowledged_append():
    """--rate: the open-loop mode runs, its requests are answered and measured, and every acknowledged append
    is verified. No rate is asserted here (a loaded machine may not keep it): rates belong in bench/."""
    proc = subprocess.run([sys.executable, "-m", "raftlog", "bench", "--rate", "4000", "--batch", "40",
                           "--duration", "2", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rate"] == 4000 and out["batch"] == 40 and out["verified"] is True
    assert out["entries"] > 0 and out["entries"] % 40 == 0, out["entries"]     # whole requests of 40 answered
    assert out["latency_ms"]["max"] > 0
