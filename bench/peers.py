"""Side by side: `raftlog bench` and PySyncObj on this machine, same cluster size, payload and concurrency.

Run (PySyncObj is the optional extra `peers`):

    python -m pip install -e '.[peers]'
    python bench/peers.py                    # 3 nodes, 100 B, 10 s each
    python bench/peers.py --nodes 5 --payload 1024 --duration 5 --json

In one run it measures, one after the other:

1. `raftlog bench --json` with the given nodes, payload, duration, clients, inflight, batch
   (fsync on: every acknowledged entry is durable on a majority);
2. PySyncObj with its journal flushed: a file journal (`SyncObjConf(journalFile=...)`) whose
   every record is pushed to disk before the node goes on. PySyncObj 0.3.x writes its
   journal into an mmap and has no option to sync it per record, so this harness calls the
   journal's own `flush()` (msync) after each `add`: that is the durable configuration, the
   one comparable with raftlog's fsync;
3. PySyncObj with the same journal file, not flushed (the page cache decides when).

PySyncObj has no client protocol: commands are calls of a `@replicated` method on a member's
SyncObj, forwarded to the leader. The load therefore runs inside node 1's process, keeping
the same number of entries in flight as raftlog's load (`clients x inflight x batch`), each
entry one command with a `callback`. Latency is per command, from the call to its callback.

Everything it starts is a child process on 127.0.0.1, killed by PID when it ends.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- one PySyncObj node (child process)

def run_node(args: argparse.Namespace) -> None:
    """A PySyncObj member; with --drive it also runs the load and prints its result as JSON."""
    from pysyncobj import SyncObj, SyncObjConf, replicated

    if args.flush:
        import pysyncobj.journal as journal

        plain_add = journal.FileJournal.add

        def add_and_flush(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
            plain_add(self, *a, **kw)
            self.flush()        # msync the journal's mmap: the record is on disk before we go on

        journal.FileJournal.add = add_and_flush

    class Log(SyncObj):
        """A replicated log: the state machine counts entries and their bytes."""

        def __init__(self, me: str, others: list[str], conf: SyncObjConf) -> None:
            super().__init__(me, others, conf)
            self.count = 0
            self.nbytes = 0

        @replicated
        def append(self, data: bytes) -> int:
            self.count += 1
            self.nbytes += len(data)
            return self.count

    conf = SyncObjConf(journalFile=args.journal)
    node = Log(args.me, args.others.split(","), conf)
    if not args.drive:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        node.destroy()
        return

    deadline = time.monotonic() + 30
    while node._getLeader() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    payload = os.urandom(args.payload)
    window = threading.Semaphore(args.window)
    lat: list[float] = []
    done = {"n": 0, "err": 0}
    lock = threading.Lock()
    measuring = {"on": False}

    def submit() -> None:
        t = time.perf_counter()

        def cb(result, error) -> None:  # noqa: ANN001
            window.release()
            with lock:
                if error:
                    done["err"] += 1
                elif measuring["on"]:
                    done["n"] += 1
                    lat.append(time.perf_counter() - t)
        node.append(payload, callback=cb)

    def load_until(deadline: float) -> None:
        # A command PySyncObj never calls back would hold its window slot forever: never wait past the deadline.
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not window.acquire(timeout=left):
                return
            submit()

    load_until(time.monotonic() + args.warmup)
    measuring["on"] = True
    t0 = time.perf_counter()
    load_until(time.monotonic() + args.duration)
    seconds = time.perf_counter() - t0
    with lock:
        measuring["on"] = False
        n = done["n"]
        lat.sort()
    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 3) if lat else 0.0
    print(json.dumps({"entries": n, "seconds": round(seconds, 3), "entries_per_s": round(n / seconds, 1),
                      "errors": done["err"],
                      "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "p999": pct(0.999),
                                     "max": round(lat[-1] * 1000, 3) if lat else 0.0}}), flush=True)
    os._exit(0)     # do not wait for PySyncObj to wind down the commands still in flight; the parent kills the rest


# ---------------------------------------------------------------- the comparison (parent process)

def run_pysyncobj(nodes: int, payload: int, duration: float, window: int, flush: bool, warmup: float) -> dict:
    """One PySyncObj cluster of `nodes` processes; the driver's result."""
    from raftlog.runtime.launcher import free_ports
    root = tempfile.mkdtemp(prefix="pysyncobj-bench-")
    ports = free_ports(nodes)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    procs: list[subprocess.Popen] = []
    try:
        for i, me in enumerate(addrs):
            others = ",".join(a for a in addrs if a != me)
            cmd = [sys.executable, os.path.abspath(__file__), "_node", "--me", me, "--others", others,
                   "--journal", os.path.join(root, f"journal{i + 1}.bin"), "--payload", str(payload),
                   "--duration", str(duration), "--window", str(window), "--warmup", str(warmup)]
            if flush:
                cmd.append("--flush")
            if i == 0:
                cmd.append("--drive")
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE if i == 0 else subprocess.DEVNULL,
                                          stderr=subprocess.PIPE if i == 0 else subprocess.DEVNULL, text=True))
        out, err = procs[0].communicate(timeout=duration + warmup + 90)
        if procs[0].returncode != 0 or not out.strip():
            raise RuntimeError(f"PySyncObj driver failed ({procs[0].returncode}): {err[-2000:]}")
        return json.loads(out.strip().splitlines()[-1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(root, ignore_errors=True)


def run_raftlog(args: argparse.Namespace) -> dict:
    """`raftlog bench --json` with the comparison's settings."""
    cmd = [sys.executable, "-m", "raftlog", "bench", "--json", "--nodes", str(args.nodes), "--payload",
           str(args.payload), "--duration", str(args.duration), "--clients", str(args.clients),
           "--inflight", str(args.inflight), "--batch", str(args.batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 180)
    if proc.returncode != 0:
        raise RuntimeError(f"raftlog bench failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    n = sub.add_parser("_node")
    n.add_argument("--me", required=True)
    n.add_argument("--others", required=True)
    n.add_argument("--journal", required=True)
    n.add_argument("--payload", type=int, default=100)
    n.add_argument("--duration", type=float, default=10.0)
    n.add_argument("--window", type=int, default=1000)
    n.add_argument("--warmup", type=float, default=1.0)
    n.add_argument("--flush", action="store_true")
    n.add_argument("--drive", action="store_true")
    for q in (p,):
        q.add_argument("--nodes", type=int, default=3)
        q.add_argument("--payload", type=int, default=100)
        q.add_argument("--duration", type=float, default=10.0)
        q.add_argument("--clients", type=int, default=4)
        q.add_argument("--inflight", type=int, default=4)
        q.add_argument("--batch", type=int, default=512)
        q.add_argument("--json", action="store_true", help="print one JSON object with all three results")
    args = p.parse_args()
    if args.cmd == "_node":
        run_node(args)
        return 0
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        print("PySyncObj is not installed: python -m pip install -e '.[peers]'", file=sys.stderr)
        return 2
    window = args.clients * args.inflight * args.batch
    results = {"settings": {"nodes": args.nodes, "payload": args.payload, "duration": args.duration,
                            "entries_in_flight": window}}
    results["raftlog"] = run_raftlog(args)
    failed = {"entries_per_s": 0.0, "latency_ms": {"p50": 0.0, "p99": 0.0}}
    for key, flush in (("pysyncobj_flushed", True), ("pysyncobj_unflushed", False)):
        try:
            results[key] = run_pysyncobj(args.nodes, args.payload, args.duration, window, flush, 1.0)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            print(f"{key}: {exc}", file=sys.stderr)
            results[key] = dict(failed, error=str(exc)[-500:])
    r = results["raftlog"]["entries_per_s"]
    results["ratio_flushed"] = round(r / max(results["pysyncobj_flushed"]["entries_per_s"], 1e-9), 1)
    results["ratio_unflushed"] = round(r / max(results["pysyncobj_unflushed"]["entries_per_s"], 1e-9), 1)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{args.nodes} nodes, {args.payload} B payloads, {window:,} entries in flight, {args.duration:g} s each")
    print(f"{'':28} {'entries/s':>12} {'p50 ms':>9} {'p99 ms':>9}")
    for name, key in (("raftlog (fsync on)", "raftlog"), ("PySyncObj, journal flushed", "pysyncobj_flushed"),
                      ("PySyncObj, journal unflushed", "pysyncobj_unflushed")):
        x = results[key]
        print(f"{name:28} {x['entries_per_s']:>12,.0f} {x['latency_ms']['p50']:>9.1f} {x['latency_ms']['p99']:>9.1f}")
    print(f"raftlog / PySyncObj: {results['ratio_flushed']}x (journal flushed), "
          f"{results['ratio_unflushed']}x (journal unflushed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
