"""`raftlog bench --embedded`: short runs of the embedded mode in this process (one member, and three over
loopback), their JSON and summary, and that verification ran on what the appenders saw. No timed assertion."""
from __future__ import annotations

import datetime
import json

import pytest
from click.testing import CliRunner

import raftlog.bench.run as bench_run
from raftlog.bench import JSON_KEYS, BenchConfig, Progress, run_bench
from raftlog.bench.stats import Stats
from raftlog.cli import main
from raftlog.hot import IMPLEMENTATION


def bench(*args: str) -> tuple[int, str, str]:
    """Run `raftlog bench ARGS` in this process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(main, ["bench", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def check_json(out: dict, *, nodes: int, clients: int, batch: int) -> None:
    assert list(out) == list(JSON_KEYS)
    assert out["embedded"] is True and out["verified"] is True
    assert (out["nodes"], out["clients"], out["batch"], out["inflight"]) == (nodes, clients, batch, 1)
    assert out["impl"] == IMPLEMENTATION and out["sync"] is True and out["rate"] is None
    assert out["requests"] > 0 and out["entries"] == out["requests"] * batch
    assert out["samples"] == out["requests"]               # one latency sample per acknowledged call
    assert out["requests_per_s"] > 0 and out["entries_per_s"] > 0
    assert out["errors"] == 0 and out["timeouts"] == 0
    assert set(out["latency_ms"]) == {"p50", "p90", "p99", "p999", "max"} and out["latency_ms"]["max"] > 0
    assert out["per_node"] == []                          # the members share this process: see bench_process
    assert set(out["bench_process"]) == {"cpu_s", "rss_mb", "cpu_us_per_entry", "cpu_us_per_request"}
    assert out["bench_process"]["rss_mb"] > 0
    assert out["version"] and datetime.datetime.fromisoformat(out["started_at"]).tzinfo is not None


def test_embedded_single_node_appends_one_at_a_time_and_verifies(tmp_path) -> None:
    data = tmp_path / "bench"
    code, out, err = bench("--embedded", "--batch", "1", "--clients", "8", "--duration", "0.5", "--json",
                           "--data", str(data))
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1, out
    check_json(json.loads(out), nodes=1, clients=8, batch=1)
    assert list(data.iterdir()) == []                     # the member's data dir removed without --keep


def test_embedded_three_members_over_loopback_append_many_and_verify() -> None:
    code, out, err = bench("--embedded", "--nodes", "3", "--batch", "4", "--clients", "3", "--duration", "0.5",
                           "--json")
    assert code == 0, err
    check_json(json.loads(out), nodes=3, clients=3, batch=4)


def test_embedded_summary_names_the_mode_requests_samples_and_failures() -> None:
    code, out, err = bench("--embedded", "--batch", "1", "--clients", "2", "--duration", "0.3")
    assert code == 0, err
    assert "raftlog bench --embedded: 1 in-process member" in out
    for field in ("committed:", "requests:", "samples", "failures:   0 errors, 0 of them timeouts", "bench:",
                  "µs per entry", "verified:   yes"):
        assert field in out, (field, out)
    assert err.splitlines()[0].startswith("embedded: 1 member (no network)")   # the setup note, on its own line


def test_embedded_verification_checks_what_the_appenders_were_told(monkeypatch) -> None:
    """Verification runs on the embedded run's acks: one ack moved by one index fails the run (exit 1)."""
    real_verify = bench_run.verify

    def verify_moved(data_dirs: dict, stats: Stats, pools: list) -> tuple[bool, str]:
        first, client, slot = stats.acks[-1]
        stats.acks[-1] = (first + 1, client, slot)
        return real_verify(data_dirs, stats, pools)

    monkeypatch.setattr(bench_run, "verify", verify_moved)
    code, out, err = bench("--embedded", "--batch", "1", "--clients", "2", "--duration", "0.3")
    assert code == 1
    assert "verified:   NO" in out and "verification failed" in err, (out, err)


def test_embedded_run_bench_detail_counts_every_acknowledged_call() -> None:
    result = run_bench(BenchConfig(nodes=1, embedded=True, impl=IMPLEMENTATION, clients=4, batch=1, duration=0.3,
                                   warmup=0.1))
    assert result["verified"] is True
    assert result["detail"].startswith("log of 1 node checked over [1, ")
    acked = int(result["detail"].split("; ")[1].split()[0])
    assert acked >= result["requests"] > 0               # the warm-up's acks are verified too


class Recorder(Progress):
    """Records what the run told its progress observer, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def note(self, text: str) -> None:
        self.events.append("note")

    def window_started(self, stats: Stats, t0: float) -> None:
        self.events.append("start")

    def sample(self, stats: Stats, now: float) -> None:
        self.events.append("sample" if stats.measuring else "warm-up")

    def window_ended(self, stats: Stats, seconds: float) -> None:
        self.events.append("end")

    def close(self) -> None:
        self.events.append("close")


def test_the_progress_observer_sees_the_window_open_and_samples_inside_it() -> None:
    """The bar used to stay at 0%: the window's start never reached it. Now it is told, then sampled."""
    rec = Recorder()
    run_bench(BenchConfig(nodes=1, embedded=True, impl=IMPLEMENTATION, clients=2, batch=1, duration=0.3,
                          warmup=0.3), progress=rec)
    events = rec.events
    assert events[0] == "note" and events[-1] == "close"
    start, end = events.index("start"), events.index("end")
    assert "warm-up" in events[:start] and "sample" not in events[:start]
    assert "sample" in events[start:end]
    assert set(events[start + 1:end]) == {"sample"}


@pytest.mark.parametrize("option", [["--inflight", "8"], ["--rate", "1000"], ["--tls"]])
def test_embedded_refuses_options_of_the_process_mode(option: list[str]) -> None:
    code, out, err = bench("--embedded", *option, "--duration", "0.1")
    assert code == 2
    assert f"{option[0]} applies to node processes, not to --embedded" in err


def test_embedded_refuses_another_hot_path_than_this_process_runs() -> None:
    other = "python" if IMPLEMENTATION == "cython" else "cython"
    code, out, err = bench("--embedded", "--impl", other, "--duration", "0.1")
    assert code == 1
    how = "with RAFTLOG_PURE=1" if other == "python" else "without RAFTLOG_PURE"
    assert err.strip().splitlines() == [f"Error: --embedded runs the members in this process, whose hot path is "
                                        f"{IMPLEMENTATION}; for {other} start it {how}"]
