"""What a run reports: the result object, its `--json` form, the human summary and the live progress label."""
from __future__ import annotations

import math
import time
from typing import Any, Optional

from raftlog.bench.config import BenchConfig
from raftlog.bench.load import Stats
from raftlog.bench.procfs import ProcessUsage

JSON_KEYS = ("nodes", "payload", "sync", "impl", "clients", "inflight", "batch", "rate", "entries", "seconds",
             "entries_per_s", "mb_per_s", "latency_ms", "elections", "verified", "per_node")


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of an ascending list, nearest-rank (0 for an empty list)."""
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def summarize(cfg: BenchConfig, stats: Stats, seconds: float, elections: int,
              usage: dict[int, ProcessUsage]) -> dict[str, Any]:
    """The run's result: JSON_KEYS (`verified` still False: verification comes after), `errors` and `rss_flat`."""
    lat = sorted(stats.latencies)
    ms = 1000.0
    entries = stats.entries
    return {
        "nodes": cfg.nodes, "payload": cfg.payload, "sync": cfg.sync, "impl": cfg.impl,
        "clients": cfg.clients, "inflight": cfg.inflight, "batch": cfg.batch, "rate": cfg.rate,
        "entries": entries, "seconds": round(seconds, 3),
        "entries_per_s": round(entries / seconds, 1) if seconds > 0 else 0.0,
        "mb_per_s": round(entries * cfg.payload / seconds / 1e6, 3) if seconds > 0 else 0.0,
        "latency_ms": {"p50": round(percentile(lat, 0.50) * ms, 3), "p90": round(percentile(lat, 0.90) * ms, 3),
                       "p99": round(percentile(lat, 0.99) * ms, 3), "p999": round(percentile(lat, 0.999) * ms, 3),
                       "max": round((lat[-1] if lat else 0.0) * ms, 3)},
        "elections": elections,
        "verified": False,
        "per_node": [{"id": i, "cpu_s": round(u.cpu_s, 2), "rss_mb": round(u.rss_mb, 1)} for i, u in usage.items()],
        "errors": stats.errors,
        "rss_flat": {i: _flatness(u.rss_samples) for i, u in usage.items()},
    }


def _flatness(samples: list[float]) -> tuple[float, float]:
    """(RSS after the first third of the run, RSS at the end), MiB."""
    if not samples:
        return (0.0, 0.0)
    return (round(samples[len(samples) // 3], 1), round(samples[-1], 1))


def public_json(result: dict[str, Any]) -> dict[str, Any]:
    """The documented `--json` object: exactly JSON_KEYS."""
    return {k: result[k] for k in JSON_KEYS}


def format_summary(r: dict[str, Any]) -> str:
    """The human summary of a run."""
    lat = r["latency_ms"]
    load = (f"open loop at {r['rate']:,.0f} entries/s" if r["rate"] else
            f"closed loop, {r['clients']} clients x {r['inflight']} requests in flight")
    lines = [
        f"raftlog bench: {r['nodes']} nodes, {r['payload']} B payloads, fsync {'on' if r['sync'] else 'off'}, "
        f"{r['impl']} hot path",
        f"load:       {load}, {r['batch']} payloads per request",
        f"committed:  {r['entries']:,} entries in {r['seconds']:.2f} s = {r['entries_per_s']:,.0f} entries/s, "
        f"{r['mb_per_s']:.2f} MB/s",
        f"latency:    p50 {lat['p50']:.3f} ms  p90 {lat['p90']:.3f} ms  p99 {lat['p99']:.3f} ms  "
        f"p99.9 {lat['p999']:.3f} ms  max {lat['max']:.3f} ms (per request, until committed)",
        f"elections:  {r['elections']} during the run"
        + (f"; {r['errors']} requests refused" if r.get("errors") else ""),
    ]
    flat = r.get("rss_flat", {})
    for n in r["per_node"]:
        mid, end = flat.get(n["id"], (0.0, 0.0))
        lines.append(f"node {n['id']}:     {n['cpu_s']:.2f} CPU s, peak RSS {n['rss_mb']:.1f} MiB "
                     f"(RSS {mid:.1f} MiB a third of the way in, {end:.1f} MiB at the end)")
    lines.append(f"verified:   {'yes' if r['verified'] else 'NO'}: {r.get('detail', '')}")
    return "\n".join(lines)


class LiveRate:
    """The progress callback for a click progress bar: live entries/s as its label.

    Duration mode: the bar fills with the measured window's time (tenths of a second);
    count mode: with committed entries. Called by the load driver every SAMPLE_SECONDS with
    (new entries, entries so far in this phase); (-1, 0) marks the start of the window.
    """

    def __init__(self, bar: Any, count: Optional[int]) -> None:
        self.bar = bar
        self.count = count
        self.t0: Optional[float] = None
        self.last_t = time.perf_counter()
        self.last_n = 0
        bar.label = "warm-up"

    def __call__(self, delta: int, total: int) -> None:
        now = time.perf_counter()
        if delta == -1:
            self.t0 = now
            self.last_t, self.last_n = now, 0
            return
        if now - self.last_t >= 0.5:
            rate = (total - self.last_n) / (now - self.last_t)
            self.last_t, self.last_n = now, total
            self.bar.label = f"{rate:>9,.0f} entries/s" if self.t0 is not None else f"warm-up {rate:,.0f} entries/s"
        bar = self.bar
        if self.t0 is None:
            bar.update(0)
        elif self.count is not None:
            bar.update(max(0, min(total, self.count) - bar.pos))
        else:
            bar.update(max(0, min(bar.length, int((now - self.t0) * 10)) - bar.pos))
