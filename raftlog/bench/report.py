"""What a run reports: the result object, its `--json` form and the human summary."""
from __future__ import annotations

from typing import Any

from raftlog.bench.config import BenchConfig
from raftlog.bench.procfs import ProcessUsage
from raftlog.bench.stats import Stats, percentile

# The documented `--json` keys. Scripts read them: add keys at the end, never rename or drop one.
JSON_KEYS = ("nodes", "payload", "sync", "impl", "clients", "inflight", "batch", "rate", "entries", "seconds",
             "entries_per_s", "mb_per_s", "latency_ms", "elections", "verified", "per_node",
             "requests", "requests_per_s", "samples", "errors", "timeouts", "version", "started_at", "embedded",
             "bench_process")

FEW_SAMPLES = 100             # below this many latency samples the summary says the percentiles rest on few

__all__ = ["FEW_SAMPLES", "JSON_KEYS", "format_summary", "percentile", "public_json", "summarize"]


def summarize(cfg: BenchConfig, stats: Stats, seconds: float, elections: int, usage: dict[int, ProcessUsage],
              bench_usage: ProcessUsage, *, version: str, started_at: str) -> dict[str, Any]:
    """The run's result: JSON_KEYS (`verified` still False: verification comes after) and `rss_flat`.

    `usage`: each node process (empty with `--embedded`: the members run in this process);
    `bench_usage`: this process, the load generator (and with `--embedded` the members too).
    """
    lat = sorted(stats.latencies)
    ms = 1000.0
    entries = stats.entries
    requests = stats.requests

    def per_second(n: float) -> float:
        return round(n / seconds, 1) if seconds > 0 else 0.0

    def cpu_us_per(n: int) -> float:
        return round(bench_usage.cpu_s * 1e6 / n, 2) if n else 0.0

    return {
        "nodes": cfg.nodes, "payload": cfg.payload, "sync": cfg.sync, "impl": cfg.impl,
        "clients": cfg.clients, "inflight": cfg.inflight, "batch": cfg.batch, "rate": cfg.rate,
        "entries": entries, "seconds": round(seconds, 3),
        "entries_per_s": per_second(entries),
        "mb_per_s": round(entries * cfg.payload / seconds / 1e6, 3) if seconds > 0 else 0.0,
        "latency_ms": {"p50": round(percentile(lat, 0.50) * ms, 3), "p90": round(percentile(lat, 0.90) * ms, 3),
                       "p99": round(percentile(lat, 0.99) * ms, 3), "p999": round(percentile(lat, 0.999) * ms, 3),
                       "max": round((lat[-1] if lat else 0.0) * ms, 3)},
        "elections": elections,
        "verified": False,
        "per_node": [{"id": i, "cpu_s": round(u.cpu_s, 2), "rss_mb": round(u.rss_mb, 1)} for i, u in usage.items()],
        "requests": requests,
        "requests_per_s": per_second(requests),
        "samples": len(lat),
        "errors": stats.errors,
        "timeouts": stats.timeouts,
        "version": version,
        "started_at": started_at,
        "embedded": cfg.embedded,
        "bench_process": {"cpu_s": round(bench_usage.cpu_s, 3), "rss_mb": round(bench_usage.rss_mb, 1),
                          "cpu_us_per_entry": cpu_us_per(entries), "cpu_us_per_request": cpu_us_per(requests)},
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
    if r["embedded"]:
        call = "append()" if r["batch"] == 1 else f"append_many() of {r['batch']} entries"
        head = (f"raftlog bench --embedded: {r['nodes']} in-process member{'s' if r['nodes'] > 1 else ''} "
                f"(raftlog.open{', peers over loopback' if r['nodes'] > 1 else ''}), ")
        load = ("closed loop, 1 appender" if r["clients"] == 1 else
                f"closed loop, {r['clients']} concurrent appenders, each") + f" awaiting one {call} at a time"
        per = "per call"
    else:
        head = f"raftlog bench: {r['nodes']} nodes, "
        load = ((f"open loop at {r['rate']:,.0f} entries/s" if r["rate"] else
                 f"closed loop, {r['clients']} clients x {r['inflight']} requests in flight")
                + f", {r['batch']} payloads per request")
        per = "per request"
    samples = r["samples"]
    few = (f"; fewer than {FEW_SAMPLES} samples: the percentiles rest on few requests"
           if samples < FEW_SAMPLES else "")
    lines = [
        head + f"{r['payload']} B payloads, fsync {'on' if r['sync'] else 'off'}, {r['impl']} hot path",
        f"load:       {load}",
        f"committed:  {r['entries']:,} entries in {r['seconds']:.2f} s = {r['entries_per_s']:,.0f} entries/s, "
        f"{r['mb_per_s']:.2f} MB/s",
        f"requests:   {r['requests']:,} acknowledged = {r['requests_per_s']:,.0f} requests/s",
        f"latency:    p50 {lat['p50']:.3f} ms  p90 {lat['p90']:.3f} ms  p99 {lat['p99']:.3f} ms  "
        f"p99.9 {lat['p999']:.3f} ms  max {lat['max']:.3f} ms ({per}, until committed; {samples:,} samples{few})",
        f"failures:   {r['errors']} errors, {r['timeouts']} of them timeouts",
        f"elections:  {r['elections']} during the run",
    ]
    flat = r.get("rss_flat", {})
    for n in r["per_node"]:
        mid, end = flat.get(n["id"], (0.0, 0.0))
        per_request = f" = {n['cpu_s'] * 1e6 / r['requests']:,.1f} µs per request" if r["requests"] else ""
        lines.append(f"node {n['id']}:     {n['cpu_s']:.2f} CPU s{per_request}, peak RSS {n['rss_mb']:.1f} MiB "
                     f"(RSS {mid:.1f} MiB a third of the way in, {end:.1f} MiB at the end)")
    bp = r["bench_process"]
    what = "the members and the load" if r["embedded"] else "the load generator"
    lines.append(f"bench:      {bp['cpu_s']:.2f} CPU s ({what}) = {bp['cpu_us_per_entry']:,.1f} µs per entry, "
                 f"{bp['cpu_us_per_request']:,.1f} µs per request; peak RSS {bp['rss_mb']:.1f} MiB")
    lines.append(f"verified:   {'yes' if r['verified'] else 'NO'}: {r.get('detail', '')}")
    return "\n".join(lines)
