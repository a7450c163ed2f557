"""The scale table of docs/benchmarks.md: `raftlog bench` ceilings by cluster size and by payload size.

Run: python bench/scale.py [--duration 10] > table.md

Each row is one `raftlog bench --json` run (closed loop, fsync on, default load); requests
are capped near 1 MiB, so large payloads use fewer payloads per request.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

ROWS = [(1, 100), (3, 100), (5, 100), (7, 100), (3, 16), (3, 1024), (3, 16384)]


def batch_for(payload: int) -> int:
    """Payloads per request: 512, fewer when that would pass ~1 MiB."""
    return max(1, min(512, (1 << 20) // (payload + 17)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--impl", default="cython")
    args = ap.parse_args()
    print("| nodes | payload | payloads/request | entries/s | MB/s | p50 ms | p99 ms | leader CPU s | "
          "peak RSS MiB | verified |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for nodes, payload in ROWS:
        batch = batch_for(payload)
        cmd = [sys.executable, "-m", "raftlog", "bench", "--json", "--nodes", str(nodes), "--payload", str(payload),
               "--batch", str(batch), "--duration", str(args.duration), "--impl", args.impl]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode not in (0, 1) or not proc.stdout.strip():
            print(f"| {nodes} | {payload} | {batch} | failed: {proc.stderr.strip()[-200:]} |||||||")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        lat = r["latency_ms"]
        cpu = max(n["cpu_s"] for n in r["per_node"])
        rss = max(n["rss_mb"] for n in r["per_node"])
        print(f"| {nodes} | {payload} B | {batch} | {r['entries_per_s']:,.0f} | {r['mb_per_s']:.1f} | "
              f"{lat['p50']:.1f} | {lat['p99']:.1f} | {cpu:.1f} | {rss:.0f} | {'yes' if r['verified'] else 'NO'} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
