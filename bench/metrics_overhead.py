"""What serving metrics costs: `raftlog bench` in alternating runs without and with `--metrics` on every node.

The bench starts its nodes with `raftlog node`, whose options also come from RAFTLOG_NODE_*
environment variables (click's auto_envvar_prefix), so RAFTLOG_NODE_METRICS=127.0.0.1:0 gives
every node a metrics port without any bench option. Runs alternate (off, on, off, on, ...)
so that the noise of a shared machine falls on both sides alike. Prints, per run and as
medians: entries/s and CPU microseconds per committed entry for each node.

    python bench/metrics_overhead.py --pairs 4 --duration 8 -- --batch 512
    python bench/metrics_overhead.py --pairs 4 --duration 8 -- --batch 1 --inflight 32
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def run(metrics: bool, duration: float, extra: list[str]) -> dict:
    """One `raftlog bench --json` run; metrics on every node when `metrics`."""
    env = dict(os.environ)
    env.pop("RAFTLOG_NODE_METRICS", None)
    if metrics:
        env["RAFTLOG_NODE_METRICS"] = "127.0.0.1:0"
    out = subprocess.run([sys.executable, "-m", "raftlog", "bench", "--json", "--duration", str(duration), *extra],
                         env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if not result["verified"]:
        raise SystemExit(f"a run did not verify: {result}")
    return result


def cpu_us_per_entry(result: dict) -> list[float]:
    """CPU microseconds per committed entry of each node, in node order."""
    return [round(n["cpu_s"] / result["entries"] * 1e6, 2) for n in result["per_node"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4, help="(off, on) pairs of runs")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    parser.add_argument("extra", nargs="*", help="more `raftlog bench` options (after --)")
    args = parser.parse_args()
    rows: dict[bool, list[dict]] = {False: [], True: []}
    for k in range(args.pairs):
        for metrics in (False, True):
            result = run(metrics, args.duration, args.extra)
            rows[metrics].append(result)
            print(f"pair {k + 1} metrics {'on ' if metrics else 'off'}: {result['entries_per_s']:>10,.0f} entries/s, "
                  f"CPU us/entry per node {cpu_us_per_entry(result)}, p50 {result['latency_ms']['p50']} ms",
                  flush=True)
    for metrics in (False, True):
        runs = rows[metrics]
        rate = statistics.median(r["entries_per_s"] for r in runs)
        cpu = statistics.median(sum(cpu_us_per_entry(r)) for r in runs)
        print(f"median metrics {'on ' if metrics else 'off'}: {rate:,.0f} entries/s, "
              f"{cpu:.2f} CPU us per entry (3 nodes summed)")


if __name__ == "__main__":
    main()
