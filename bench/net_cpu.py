"""CPU per request of every process of a `raftlog bench` run: the leader, each follower, and the load generator.

`raftlog bench` reports each node's CPU seconds over the measured window and its own process's
(the load generator's, `bench_process`); this script runs the bench in its own process, keeps
the nodes' last statuses (entries per LMDB transaction), and prints one line per run with the
CPU figures divided by the requests
acknowledged in the window:

    python bench/net_cpu.py --batch 1 --clients 8 --inflight 16 --runs 3
    python bench/net_cpu.py --batch 1 --clients 1 --inflight 1 --json

It imports whichever raftlog the interpreter has, so alternating runs of two checkouts are
`A/.venv/bin/python bench/net_cpu.py ...` and `B/.venv/bin/python bench/net_cpu.py ...`.
"""
from __future__ import annotations

import argparse
import json
import re
from typing import Any

from raftlog.bench.cluster import BenchCluster
from raftlog.bench.config import BenchConfig
from raftlog.bench.progress import Progress
from raftlog.bench.run import run_bench


def measure(cfg: BenchConfig) -> dict[str, Any]:
    """One bench run; its summary plus `leader`, `us_per_request` (per node id and `load`), `requests`
    and `entries_per_write` (entries per LMDB transaction of each node over the whole run)."""
    last_status: dict[int, Any] = {}
    statuses = BenchCluster.statuses

    async def keep_statuses(self: BenchCluster) -> dict[int, Any]:
        got = await statuses(self)
        last_status.update(got)
        return got

    class KeepNotes(Progress):
        notes: list[str] = []

        def note(self, text: str) -> None:
            self.notes.append(text)

    progress = KeepNotes()
    BenchCluster.statuses = keep_statuses      # type: ignore[method-assign]
    try:
        result = run_bench(cfg, progress=progress)
    finally:
        BenchCluster.statuses = statuses       # type: ignore[method-assign]
    notes = progress.notes
    found = re.search(r"node (\d+) leads", " ".join(notes))
    leader = int(found.group(1)) if found else 0
    requests = max(1, result["requests"])
    per = {str(n["id"]): round(n["cpu_s"] / requests * 1e6, 1) for n in result["per_node"]}
    per["load"] = result["bench_process"]["cpu_us_per_request"]
    # Transactions per entry over the whole run (the last status is read right after the window).
    entries_per_write = {str(i): round(st["last_index"] / max(1, st["writes"]), 1)
                         for i, st in last_status.items() if st}
    if not result["verified"]:
        print(f"NOT VERIFIED: {result['detail']}", flush=True)
    return {"entries_per_s": result["entries_per_s"], "requests": requests, "p50_ms": result["latency_ms"]["p50"],
            "p99_ms": result["latency_ms"]["p99"], "elections": result["elections"], "verified": result["verified"],
            "leader": leader, "us_per_request": per,
            "entries_per_write": entries_per_write}


def line(r: dict[str, Any]) -> str:
    """One human line: throughput, p50, leader / followers / load generator CPU per request."""
    per = dict(r["us_per_request"])
    lead = per.pop(str(r["leader"]), 0.0)
    load = per.pop("load")
    follow = " ".join(f"{v:.1f}" for v in per.values())
    epw = dict(r["entries_per_write"])
    epw_lead = epw.pop(str(r["leader"]), 0.0)
    return (f"{r['entries_per_s']:>10,.0f} req/s  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
            f"us CPU/request: leader {lead:.1f}  followers {follow}  load {load:.1f}  "
            f"entries/txn: leader {epw_lead} followers {' '.join(str(v) for v in epw.values())}  "
            f"elections {r['elections']}  verified {r['verified']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--inflight", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--payload", type=int, default=100)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--no-sync", action="store_true")
    ap.add_argument("--json", action="store_true", help="one JSON object per run")
    ap.add_argument("--label", default="", help="prefix of each printed line")
    a = ap.parse_args()
    cfg = BenchConfig(clients=a.clients, inflight=a.inflight, batch=a.batch, payload=a.payload,
                      duration=a.duration, sync=not a.no_sync)
    for _ in range(a.runs):
        r = measure(cfg)
        print(json.dumps(r) if a.json else f"{a.label}{line(r)}", flush=True)


if __name__ == "__main__":
    main()
