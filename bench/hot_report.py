"""Turn a pytest-benchmark JSON of bench/test_bench_hot.py into a markdown table (Cython vs pure per group)."""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def fmt(seconds: float) -> str:
    """A duration with a readable unit."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def main(path: str) -> None:
    """Print one row per benchmark group: median time of each implementation and their ratio."""
    with open(path) as f:
        data = json.load(f)
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        impl = bench["params"]["impl"]
        groups[bench["group"]][impl] = bench["stats"]["median"]
    machine = data.get("machine_info", {})
    print("# Hot path: Cython vs pure Python\n")
    print("Command: `python -m pytest bench/test_bench_hot.py --benchmark-only --benchmark-json=hot.json"
          " && python bench/hot_report.py hot.json > bench/RESULTS-hot.md`\n")
    print(f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, Python {machine.get('python_version', '?')}; "
          "medians; the machine was shared with other jobs.\n")
    print("| benchmark | Cython | pure Python | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for group, times in groups.items():
        if {"cython", "python"} <= times.keys():
            ratio = times["python"] / times["cython"]
            print(f"| {group} | {fmt(times['cython'])} | {fmt(times['python'])} | {ratio:.1f}x |")


if __name__ == "__main__":
    main(sys.argv[1])
