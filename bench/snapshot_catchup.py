"""Snapshot size and catch-up time on a long log: three embedded members, one down while N entries commit.

    python bench/snapshot_catchup.py [--entries 1000000] [--keys 100000] [--every 100000] [--tail 10000]

Three RaftLogs with a key-value state machine run in one event loop over loopback TCP
(fsync on). One member stops right after the election; the other two commit `--entries`
entries (`key<i % keys>=<value>`), snapshotting every `--every` and compacting with a
tail of `--tail`. Then the stopped member restarts with its empty log and catches up: the
leader has compacted everything it lacks, so it receives the snapshot (chunks of 1 MiB)
and then the entries after it. Reported: the snapshot's size, the time to take it, the
data dir sizes, and the restarted member's time to reach the leader's applied index.
With `--no-compaction` the same run replays the whole log instead (for comparison).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

import raftlog
from raftlog.runtime.launcher import free_ports


class KV:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def apply(self, entry):
        key, _, value = entry.data.partition(b"=")
        self.data[key] = value

    def snapshot(self):
        """A copy taken on the event loop (cheap); serialized piecewise on the snapshot thread."""
        items = list(self.data.items())
        return (b"".join(k + b"=" + v + b"\n" for k, v in items[i:i + 4096]) for i in range(0, len(items), 4096))

    def restore(self, f) -> None:
        self.data = dict(line.partition(b"=")[::2] for line in f.read().split(b"\n") if line)


def du(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


async def run(args: argparse.Namespace) -> dict:
    root = tempfile.mkdtemp(prefix="raftlog-snapbench-")
    peers = {i: f"127.0.0.1:{p}" for i, p in zip((1, 2, 3), free_ports(3))}
    every = 0 if args.no_compaction else args.every
    opts = dict(peers=peers, snapshot_every=every, snapshot_bytes=0, snapshot_tail=args.tail)
    logs = {i: raftlog.open(f"{root}/{i}", node_id=i, state_machine=KV(), **opts) for i in (1, 2, 3)}
    for lg in logs.values():
        await lg.start()
    leader = await logs[1].wait_for_leader(10)
    victim = next(i for i in logs if i != leader)
    await logs[victim].close()
    del logs[victim]
    lead = logs[leader]
    started = time.monotonic()
    batch = 4096
    done = 0
    changes = 0
    sizes: list[tuple[int, int]] = []     # (entries so far, leader data dir bytes): bounded with compaction
    while done < args.entries:
        n = min(batch, args.entries - done)
        try:
            await lead.append_many([b"key%d=value%d" % ((done + i) % args.keys, done + i) for i in range(n)])
        except (raftlog.NotLeader, raftlog.Timeout) as exc:
            # Three nodes share one event loop (and here a busy machine): a stall past the
            # election timeout moves leadership. Follow it and redo the batch.
            changes += 1
            leader = await logs[next(iter(logs))].wait_for_leader(10)
            lead = logs[leader]
            print(f"leadership moved to {leader} ({type(exc).__name__}); continuing", file=sys.stderr)
            continue
        done += n
        if done % 100_000 < batch:
            sizes.append((done, du(f"{root}/{leader}")))
    load_s = time.monotonic() - started
    while lead._node.snapshots.busy:
        await asyncio.sleep(0.05)
    st = lead.status()
    result = {"entries": args.entries, "keys": args.keys, "append_seconds": round(load_s, 2),
              "entries_per_second": round(args.entries / load_s), "leader_changes": changes,
              "leader_last_snapshot": lead._node.snapshots.last,
              "leader_first_index": st["first_index"], "leader_applied": lead.applied_index,
              "leader_data_dir_bytes": du(f"{root}/{leader}"), "leader_data_dir_bytes_during_load": sizes,
              "snapshot_bytes": st["snapshot"]["size"]}
    target = lead.applied_index
    started = time.monotonic()
    logs[victim] = raftlog.open(f"{root}/{victim}", node_id=victim, state_machine=KV(), **opts)
    await logs[victim].start()
    while logs[victim].applied_index < target:
        await asyncio.sleep(0.005)
    result["catch_up_seconds"] = round(time.monotonic() - started, 2)
    result["restarted_member_snapshot"] = logs[victim].status()["snapshot"]
    result["restarted_member_data_dir_bytes"] = du(f"{root}/{victim}")
    assert logs[victim].state_machine.data == lead.state_machine.data
    for lg in logs.values():
        await lg.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--every", type=int, default=100_000)
    p.add_argument("--tail", type=int, default=10_000)
    p.add_argument("--no-compaction", action="store_true")
    print(json.dumps(asyncio.run(run(p.parse_args())), indent=2))


if __name__ == "__main__":
    main()
