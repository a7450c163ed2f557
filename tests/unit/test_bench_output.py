"""`raftlog bench` output: the live bar, the --interval lines, the summary's sample note and the JSON keys.

The observers are driven with fabricated stats and clock readings (no run, nothing timed);
one short embedded run checks the interval lines end to end.
"""
from __future__ import annotations

import io
import re

from click.testing import CliRunner

from raftlog.bench import JSON_KEYS, BenchConfig, IntervalLines, LiveBar, format_summary, public_json
from raftlog.bench.procfs import ProcessUsage
from raftlog.bench.report import summarize
from raftlog.bench.stats import Stats
from raftlog.cli import main

LINE = re.compile(r"progress: (\d+\.\d) s, (\d+\.\d) entries/s, (\d+\.\d) requests/s, "
                  r"lat (p50 \d+\.\d{3} ms p99 \d+\.\d{3} ms|- ms), (\d+) errors, (\d+) timeouts")


def acked(stats: Stats, requests: int, batch: int, latency: float) -> None:
    """Count `requests` acknowledged requests of `batch` entries, as a driver does."""
    for _ in range(requests):
        stats.total_entries += batch
        stats.total_requests += 1
        if stats.measuring:
            stats.entries += batch
            stats.requests += 1
            stats.latencies.append(latency)


def test_interval_lines_one_per_interval_with_that_interval_s_rates_latency_and_failures() -> None:
    out = io.StringIO()
    lines = IntervalLines(out, 1.0)
    stats = Stats()
    acked(stats, 5, 10, 0.5)                 # warm-up: not in any line
    stats.measuring = True
    lines.window_started(stats, 100.0)
    acked(stats, 20, 10, 0.002)
    lines.sample(stats, 100.5)               # half an interval: no line yet
    assert out.getvalue() == ""
    lines.sample(stats, 101.0)
    acked(stats, 40, 10, 0.004)
    stats.errors, stats.timeouts = 3, 1
    lines.sample(stats, 103.0)               # a late sample: the line covers the 2 s since the last one
    lines.sample(stats, 103.5)               # nothing new and under an interval: no line
    assert out.getvalue().splitlines() == [
        "progress: 1.0 s, 200.0 entries/s, 20.0 requests/s, lat p50 2.000 ms p99 2.000 ms, 0 errors, 0 timeouts",
        "progress: 3.0 s, 200.0 entries/s, 20.0 requests/s, lat p50 4.000 ms p99 4.000 ms, 3 errors, 1 timeouts",
    ]


def test_interval_line_without_answers_shows_no_latency() -> None:
    out = io.StringIO()
    lines = IntervalLines(out, 0.5)
    stats = Stats()
    stats.measuring = True
    lines.window_started(stats, 0.0)
    lines.sample(stats, 0.5)
    assert out.getvalue() == "progress: 0.5 s, 0.0 entries/s, 0.0 requests/s, lat - ms, 0 errors, 0 timeouts\n"


def test_live_bar_moves_with_the_window_and_shows_live_rates() -> None:
    out = io.StringIO()
    bar = LiveBar(out, duration=10.0, count=None)
    stats = Stats()
    bar.sample(stats, bar._last[0] + 1.0)
    assert bar.line.startswith("warm-up")
    stats.measuring = True
    bar.window_started(stats, 50.0)
    acked(stats, 300, 10, 0.001)
    bar.sample(stats, 55.0)
    assert bar.line.startswith("[###############---------------]  50%"), bar.line
    assert re.search(r"[\d,]+ entries/s +[\d,]+ requests/s$", bar.line), bar.line
    bar.note("a note")
    # The note clears the bar's line, stands on its own line, and the bar is drawn again below it.
    assert out.getvalue().endswith("\r\x1b[Ka note\n" + bar.line)
    bar.window_ended(stats, 10.0)
    assert "100%" in bar.line
    bar.close()
    assert out.getvalue().endswith("\n")


def test_live_bar_in_count_mode_fills_with_acknowledged_entries() -> None:
    bar = LiveBar(io.StringIO(), duration=10.0, count=1000)
    stats = Stats()
    stats.measuring = True
    bar.window_started(stats, 0.0)
    acked(stats, 25, 10, 0.001)
    bar.sample(stats, 1.0)
    assert " 25%" in bar.line, bar.line


def result(samples: int) -> dict:
    stats = Stats()
    stats.measuring = True
    acked(stats, samples, 2, 0.001)
    stats.errors, stats.timeouts = 4, 1
    usage = ProcessUsage(pid=1, cpu_s=0.5)
    r = summarize(BenchConfig(), stats, 2.0, 0, {1: ProcessUsage(pid=2, cpu_s=1.0)}, usage, version="9.9",
                  started_at="2026-01-01T00:00:00+00:00")
    r["detail"] = "checked"
    return r


def test_summary_gives_requests_samples_failures_and_says_when_samples_are_few() -> None:
    few = format_summary(result(99))
    assert "requests:   99 acknowledged = 50 requests/s" in few
    assert "99 samples; fewer than 100 samples: the percentiles rest on few requests" in few
    assert "failures:   4 errors, 1 of them timeouts" in few
    many = format_summary(result(100))
    assert "100 samples)" in many and "fewer than" not in many


def test_json_keeps_every_old_key_and_adds_the_new_ones() -> None:
    old = ["nodes", "payload", "sync", "impl", "clients", "inflight", "batch", "rate", "entries", "seconds",
           "entries_per_s", "mb_per_s", "latency_ms", "elections", "verified", "per_node"]
    new = ["requests", "requests_per_s", "samples", "errors", "timeouts", "version", "started_at", "embedded",
           "bench_process"]
    assert list(JSON_KEYS) == old + new
    out = public_json(result(100))
    assert list(out) == old + new
    assert (out["requests"], out["requests_per_s"], out["samples"]) == (100, 50.0, 100)
    assert (out["errors"], out["timeouts"], out["version"]) == (4, 1, "9.9")
    assert out["started_at"] == "2026-01-01T00:00:00+00:00" and out["embedded"] is False
    assert out["bench_process"] == {"cpu_s": 0.5, "rss_mb": 0.0, "cpu_us_per_entry": 2500.0,
                                    "cpu_us_per_request": 5000.0}


def test_interval_option_prints_progress_lines_on_stderr_and_json_alone_on_stdout() -> None:
    res = CliRunner().invoke(main, ["bench", "--embedded", "--batch", "1", "--clients", "2", "--duration", "0.6",
                                    "--interval", "0.2", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    assert len(res.stdout.strip().splitlines()) == 1
    progress = [line for line in res.stderr.splitlines() if line.startswith("progress:")]
    assert progress, res.stderr
    assert all(LINE.fullmatch(line) for line in progress), progress
    times = [float(LINE.fullmatch(line).group(1)) for line in progress]   # type: ignore[union-attr]
    assert times == sorted(set(times))
    assert "\r" not in res.stderr                           # lines, not a bar
