"""bench/embedded_peers.py runs end to end at tiny sizes: every system, every workload, the counts, the JSON.

No figure is asserted (speed is measured, not tested): only that each run appended and
stored what it says, and that the summary has what docs/benchmarks-embedded.md's table is made from.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from types import ModuleType

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "embedded_peers.py")
TINY = ["--rounds", "1", "--count", "6", "--concurrency", "4", "--concurrent-ops", "3", "--many", "10",
        "--many-ops", "2", "--call-ops", "4", "--quiet"]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("embedded_peers", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # (its dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script()


def test_every_workload_and_system_runs_verified_with_counts_and_json(script: ModuleType, tmp_path) -> None:
    out = tmp_path / "peers.json"
    summaries = script.main(TINY + ["--dir", str(tmp_path), "--json", str(out)])
    assert [s["workload"] for s in summaries] == list(script.WORKLOADS)
    for s in summaries:
        assert set(s["systems"]) == {"raftlog", "lmdb", "sqlite"}
        for system, figures in s["systems"].items():
            assert figures["appends_per_s"] > 0 and figures["cpu_us_per_append"] >= 0, (s["workload"], system)
            one_at_a_time = s["spec"]["concurrency"] == 1 and s["spec"]["per_op"] == 1
            assert (figures["p50_ms"] is not None) == one_at_a_time, (s["workload"], system)
        assert set(s["ratios"]) == {"lmdb", "sqlite"}
        counts = s["counts"]
        assert set(counts) == {"commits", "fsyncs", "hand_offs", "ready_passes", "wakeups", "python_calls",
                               "c_calls"}
        assert counts["commits"] > 0 and counts["python_calls"] > 0, s["workload"]
        assert (counts["fsyncs"] > 0) == s["spec"]["sync"], s["workload"]
    saved = json.loads(out.read_text())
    assert [s["workload"] for s in saved["summaries"]] == list(script.WORKLOADS)
    assert os.listdir(tmp_path) == ["peers.json"], "the data dirs were left behind"


@pytest.mark.parametrize("system", ["raftlog", "lmdb", "sqlite"])
def test_a_run_stores_exactly_what_it_appended(script: ModuleType, tmp_path, system: str) -> None:
    args = script.parse(TINY)
    for spec in script.specs(args).values():
        result = script.RUNNERS[system](spec, str(tmp_path / f"{system}-{spec.name}"), script.payloads(100))
        assert result.appends == spec.appends and result.stored == spec.stored, (system, spec.name)
        assert result.seconds > 0 and len(result.latencies_ms) == (spec.ops if spec.per_op * spec.concurrency == 1
                                                                   else 0)


def test_a_store_holding_other_than_what_was_appended_is_refused(script: ModuleType, tmp_path) -> None:
    spec = script.specs(script.parse(TINY))["one"]

    def short_run(clock) -> int:
        clock.start()
        return spec.stored - 1
    with pytest.raises(script.Unverified, match="stored"):
        script._timed(short_run, spec, "lmdb", [])
