"""The client side of the network-namespace tests, run inside the client namespace.

    python tests/netns/netns_client.py --peers 1=10.77.0.11:7000,... --out DIR --seed N

Runs the recorded workload of tests/support/history_workload.py and a leader watcher (every member's
status every 100 ms, one JSON line per round in DIR/leaders.jsonl, with monotonic times, which
are the same clock in every namespace) until DIR/stop exists; then saves the history to
DIR/history.jsonl and exits.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # tests/, for support.*

from raftlog.sim.history import History  # noqa: E402
from raftlog.client import query_status  # noqa: E402
from support.history_workload import Workload  # noqa: E402


def watch(addresses: list[str], cluster_id: str, path: str, stop: threading.Event) -> None:
    """Append one line per round: {"t": monotonic, "statuses": [status or null, ...]}."""
    async def main() -> None:
        with open(path, "a") as f:
            while not stop.is_set():
                t = time.monotonic()
                sts = await asyncio.gather(*(query_status(a, cluster_id=cluster_id, timeout=0.3) for a in addresses))
                keep = [None if s is None else {k: s.get(k) for k in ("id", "role", "term", "leader", "commit")}
                        for s in sts]
                f.write(json.dumps({"t": t, "statuses": keep}) + "\n")
                f.flush()
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t)))
    asyncio.run(main())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", required=True)
    ap.add_argument("--cluster-id", default="proc-test")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    addresses = [p.split("=", 1)[1] for p in args.peers.split(",")]
    history = History()
    work = Workload(addresses, args.cluster_id, history, seed=args.seed)
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(addresses, args.cluster_id,
                                                   os.path.join(args.out, "leaders.jsonl"), stop))
    watcher.start()
    work.start()
    stop_file = os.path.join(args.out, "stop")
    while not os.path.exists(stop_file):
        time.sleep(0.1)
    work.finish(60)
    stop.set()
    watcher.join(30)
    history.save(os.path.join(args.out, "history.jsonl"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
