"""Turn pytest-benchmark JSON from bench/test_bench_storage.py into the markdown table of RESULTS-storage.md.

Usage: python bench/storage_report.py BENCH.json
"""
from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    """Print one row per (batch size, sync): entries/s of both, and LmdbStorage's time over raw's."""
    with open(path) as f:
        data = json.load(f)
    rows: dict[tuple[int, bool], dict[str, dict]] = {}
    for b in data["benchmarks"]:
        extra = b["extra_info"]
        rows.setdefault((extra["entries"], extra["sync"]), {})[extra["impl"]] = {**b["stats"], **extra}
    hot = {b["extra_info"]["hot"] for b in data["benchmarks"]}
    cpu = data["machine_info"].get("cpu", {}).get("brand_raw", "?")
    print(f"Hot path: {', '.join(sorted(hot))}. CPU: {cpu}. "
          "Times are medians (fsync on a shared machine has a long tail).\n")
    print("| batch | sync | LmdbStorage entries/s | raw putmulti entries/s | LmdbStorage save | raw save "
          "| ratio, separate runs | ratio, interleaved |")
    print("|---:|:---:|---:|---:|---:|---:|---:|---:|")
    for (n, sync), impls in sorted(rows.items(), key=lambda kv: (not kv[0][1], kv[0][0])):
        ours, raw, pair = impls.get("LmdbStorage"), impls.get("raw"), impls.get("paired")
        if not ours or not raw:
            continue
        paired = f"{pair['ratio']:.2f}x" if pair else "-"
        print(f"| {n} | {'on' if sync else 'off'} | {n / ours['median']:,.0f} | {n / raw['median']:,.0f} "
              f"| {ours['median'] * 1e6:,.0f} us | {raw['median'] * 1e6:,.0f} us "
              f"| {ours['median'] / raw['median']:.2f}x | {paired} |")


if __name__ == "__main__":
    main(sys.argv[1])
