"""raftlog embedded (`raftlog.open`, one node) against raw py-lmdb and sqlite3 on the same workloads, in one run.

    python bench/embedded_peers.py                       # every workload, 3 alternating rounds
    python bench/embedded_peers.py --workload one --rounds 5 --count 3000
    python bench/embedded_peers.py --json results.json

Every system writes 100-byte payloads (`--payload`) and, unless the workload says
otherwise, makes each commit durable (fsync) before it counts as done:

- `raftlog`: `raftlog.open(dir, sync=...)`, a single node without network, appends through
  `RaftLog.append` / `append_many` on one asyncio event loop;
- `lmdb`: raw py-lmdb, `put(key, payload, append=True)` in write transactions of an
  environment opened with `sync` (and metasync) as raftlog's storage opens it;
- `sqlite`: the stdlib sqlite3 module, WAL journal, `synchronous=FULL` (`OFF` without sync),
  `INSERT` into an INTEGER PRIMARY KEY table inside explicit `BEGIN ... COMMIT`.

Workloads:

- `one`: one append at a time (the next starts when the previous returned): raftlog
  `await log.append(p)`, lmdb one put per synced transaction, sqlite one insert per
  transaction. Latency p50/p99, appends/s, CPU per append.
- `concurrent` / `concurrent-nosync`: 256 (`--concurrency`) asyncio tasks appending one
  entry each, again and again, with fsync on / off (`sync=False`, lmdb sync off, sqlite
  synchronous=OFF). The references do what perfect group commit would: 256 puts (inserts)
  per transaction.
- `many`: `append_many(1000)` (`--many`) for reference; lmdb 1000 puts per transaction
  (cursor putmulti), sqlite executemany of 1000 per transaction.

Each round runs every system once per workload, the order reversed every other round
(A B C, C B A, ...), each in a fresh directory under `--dir` (default: a temporary one).
The table gives each figure's median over the rounds and each ratio as the median of the
per-round ratios (raftlog against the reference that ran next to it), with its range.
CPU per append is the process's CPU time (user + system, all threads) over the measured
appends divided by their number.

After the timed rounds (unless `--no-counts`) one untimed raftlog run per workload counts,
per append: LMDB commits (LmdbStorage.save calls that wrote), fsynced commits (the same
when sync), thread hand-offs (saves run off the event loop's thread), Ready passes
(Node._pump calls), event-loop wake-ups (selector polls), and in a last short run with
a profile hook on every thread the Python function calls and C calls. The counters are
wrappers installed by this script only for those runs; the timed runs run unwrapped.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Optional

import lmdb

import raftlog
from raftlog.runtime.node import Node
from raftlog.storage.lmdb import LmdbStorage

WORKLOADS = ("one", "concurrent", "concurrent-nosync", "many")
SYSTEMS = ("raftlog", "lmdb", "sqlite")
MAP_SIZE = 1 << 30


@dataclass
class Spec:
    """One workload's shape: how many appends per operation and per round, synced or not."""

    name: str
    sync: bool
    per_op: int          # entries per operation (one append, or one append_many)
    ops: int             # operations measured per round (per task for `concurrent`)
    concurrency: int     # concurrent appenders (1: one at a time)
    warmup: int          # operations before the measurement starts

    @property
    def appends(self) -> int:
        """Entries appended in the measured part of one run."""
        return self.per_op * self.ops * self.concurrency

    @property
    def stored(self) -> int:
        """Entries one run leaves in its store: the warmup's and the measured ones."""
        return self.per_op * (self.warmup + self.ops) * self.concurrency


@dataclass
class Result:
    """One system's run of one workload."""

    system: str
    workload: str
    appends: int
    seconds: float
    cpu_seconds: float
    stored: int          # entries found in the store after the run (checked against Spec.stored)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.appends / self.seconds

    @property
    def cpu_us(self) -> float:
        """Process CPU (all threads, user + system) per append, in microseconds."""
        return self.cpu_seconds / self.appends * 1e6

    def percentile(self, q: float) -> Optional[float]:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def specs(args: argparse.Namespace) -> dict[str, Spec]:
    """The workloads at the sizes the command line asked for."""
    per_task = max(1, args.concurrent_ops)
    return {
        "one": Spec("one", True, 1, args.count, 1, max(1, args.count // 10)),
        "concurrent": Spec("concurrent", True, 1, per_task, args.concurrency, max(1, per_task // 10)),
        "concurrent-nosync": Spec("concurrent-nosync", False, 1, per_task, args.concurrency,
                                  max(1, per_task // 10)),
        "many": Spec("many", True, args.many, args.many_ops, 1, max(1, args.many_ops // 10)),
    }


def payloads(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


class Clock:
    """Wall and process CPU time between start() and stop() (stop defaults to when the run returned)."""

    def __init__(self) -> None:
        self.started = (0.0, 0.0)
        self.stopped: Optional[tuple[float, float]] = None

    def start(self) -> None:
        self.started = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        self.stopped = (time.perf_counter(), time.process_time())


class Unverified(Exception):
    """A run left another number of entries in its store than it appended."""


def _timed(run: Callable[[Clock], int], spec: Spec, system: str, latencies: list[float]) -> Result:
    """Run `run(clock)`, which starts the clock after its warmup and returns the entries stored; a Result.

    Unverified when the store holds another number of entries than the run appended.
    """
    clock = Clock()
    stored = run(clock)
    if clock.stopped is None:
        clock.stop()
    assert clock.stopped is not None
    if stored != spec.stored:
        raise Unverified(f"{system} {spec.name}: {stored} entries stored, {spec.stored} appended")
    return Result(system, spec.name, spec.appends, clock.stopped[0] - clock.started[0],
                  clock.stopped[1] - clock.started[1], stored, latencies)


def measure(op: Callable[[], None], group: int, spec: Spec, clock: Clock, latencies: list[float]) -> None:
    """A reference's run: the warmup, then the measured operations (each one's latency when one entry each)."""
    for _ in range(spec.warmup):
        op()
    clock.start()
    if group == 1:
        for _ in range(spec.ops):
            t = time.perf_counter()
            op()
            latencies.append((time.perf_counter() - t) * 1e3)
    else:
        for _ in range(spec.ops):
            op()


# ---------------------------------------------------------------- raw py-lmdb

def run_lmdb(spec: Spec, path: str, payload: bytes) -> Result:
    """Raw py-lmdb: one put per transaction (one at a time), else `per_op` x concurrency puts per transaction."""
    env = lmdb.open(path, map_size=MAP_SIZE, sync=spec.sync, metasync=spec.sync)
    key = itertools.count(1)
    group = spec.per_op * spec.concurrency      # entries per transaction
    latencies: list[float] = []

    def one() -> None:
        with env.begin(write=True) as txn:
            txn.put(next(key).to_bytes(8, "big"), payload, append=True)

    def batch() -> None:
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(((next(key).to_bytes(8, "big"), payload) for _ in range(group)), append=True)

    op = one if group == 1 else batch

    def run(clock: Clock) -> int:
        measure(op, group, spec, clock, latencies)
        return env.stat()["entries"]
    try:
        return _timed(run, spec, "lmdb", latencies)
    finally:
        env.close()


# ---------------------------------------------------------------- sqlite3

def run_sqlite(spec: Spec, path: str, payload: bytes) -> Result:
    """sqlite3, WAL, synchronous FULL (OFF without sync): one insert per transaction, or executemany per group."""
    os.makedirs(path, exist_ok=True)
    db = sqlite3.connect(os.path.join(path, "log.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if spec.sync else 'OFF'}")
    db.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    group = spec.per_op * spec.concurrency
    rows = [(payload,)] * group
    latencies: list[float] = []

    def one() -> None:
        db.execute("BEGIN")
        db.execute("INSERT INTO log (data) VALUES (?)", (payload,))
        db.execute("COMMIT")

    def batch() -> None:
        db.execute("BEGIN")
        db.executemany("INSERT INTO log (data) VALUES (?)", rows)
        db.execute("COMMIT")

    op = one if group == 1 else batch

    def run(clock: Clock) -> int:
        measure(op, group, spec, clock, latencies)
        return db.execute("SELECT count(*) FROM log").fetchone()[0]
    try:
        return _timed(run, spec, "sqlite", latencies)
    finally:
        db.close()


# ---------------------------------------------------------------- raftlog embedded

async def drive_raftlog(log: raftlog.RaftLog, spec: Spec, payload: bytes, ops: int,
                        latencies: Optional[list[float]]) -> None:
    """`ops` operations of the workload on an open log (per task when concurrent)."""
    if spec.per_op > 1:
        items = [payload] * spec.per_op
        for _ in range(ops):
            await log.append_many(items)
    elif spec.concurrency == 1:
        append = log.append
        clock = time.perf_counter
        for _ in range(ops):
            t = clock()
            await append(payload)
            if latencies is not None:
                latencies.append((clock() - t) * 1e3)
    else:
        async def appender() -> None:
            append = log.append
            for _ in range(ops):
                await append(payload)
        await asyncio.gather(*(appender() for _ in range(spec.concurrency)))


def run_raftlog(spec: Spec, path: str, payload: bytes,
                around: Optional[Callable[[Callable[[], Awaitable[None]]], Awaitable[None]]] = None) -> Result:
    """raftlog.open(path, sync=...) on a fresh event loop: warm up, then the measured appends (not the close).

    `around(measure)`: run the measured part through it (the counters hook in there).
    """
    latencies: list[float] = []

    def run(clock: Clock) -> int:
        async def main() -> int:
            async with raftlog.open(path, sync=spec.sync) as log:
                before = log.last_index          # (the new term's no-op is in already)
                await drive_raftlog(log, spec, payload, spec.warmup, None)

                async def measured() -> None:
                    clock.start()
                    await drive_raftlog(log, spec, payload, spec.ops, latencies if spec.concurrency == 1 else None)
                    clock.stop()
                await (around(measured) if around is not None else measured())
                return log.last_index - before
        return asyncio.run(main())
    return _timed(run, spec, "raftlog", latencies)


RUNNERS: dict[str, Callable[[Spec, str, bytes], Result]] = {"raftlog": run_raftlog, "lmdb": run_lmdb,
                                                             "sqlite": run_sqlite}


# ---------------------------------------------------------------- counting (untimed runs)

class Counters:
    """Wrappers counting raftlog's work while installed: commits, hand-offs, Ready passes, loop wake-ups."""

    def __init__(self) -> None:
        self.commits = 0           # LmdbStorage.save calls that wrote a transaction
        self.off_loop = 0          # of them, run on another thread than the event loop's
        self.pumps = 0             # Node._pump calls (Ready passes)
        self.wakeups = 0           # selector polls of the event loop
        self.loop_thread = 0
        self._saved: list[tuple[Any, str, Any]] = []

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wrap LmdbStorage.save, Node._pump and this loop's selector."""
        self.loop_thread = threading.get_ident()
        counters = self
        plain_save = LmdbStorage.save
        plain_pump = Node._pump

        def save(storage: LmdbStorage, *args: Any, **kw: Any) -> None:
            if any(kw.get(k) for k in ("hard_state", "truncate_from", "records", "conf_state")):
                counters.commits += 1          # (a save with nothing to write opens no transaction)
                if threading.get_ident() != counters.loop_thread:
                    counters.off_loop += 1
            plain_save(storage, *args, **kw)

        def pump(node: Node, *args: Any, **kw: Any) -> None:
            counters.pumps += 1
            plain_pump(node, *args, **kw)

        selector = loop._selector  # type: ignore[attr-defined]
        plain_select = selector.select

        def select(timeout: Optional[float] = None) -> Any:
            counters.wakeups += 1
            return plain_select(timeout)

        self._saved = [(LmdbStorage, "save", plain_save), (Node, "_pump", plain_pump),
                       (selector, "select", plain_select)]
        LmdbStorage.save = save  # type: ignore[method-assign]
        Node._pump = pump  # type: ignore[method-assign]
        selector.select = select

    def uninstall(self) -> None:
        for owner, name, plain in self._saved:
            if isinstance(owner, type):
                setattr(owner, name, plain)
            else:
                delattr(owner, name)      # the instance attribute shadowed the class's method
        self._saved = []


class CallCounter:
    """A profile hook on every thread (installed before the log opens) counting calls while `active`."""

    def __init__(self) -> None:
        self.active = False
        self._calls = itertools.count()      # next() on itertools.count is atomic under the GIL
        self._c_calls = itertools.count()

    def hook(self, frame: Any, event: str, arg: Any) -> None:
        if self.active:
            if event == "call":
                next(self._calls)
            elif event == "c_call":
                next(self._c_calls)

    def totals(self) -> tuple[int, int]:
        """(Python calls, C calls) counted so far."""
        return next(self._calls), next(self._c_calls)

    def __enter__(self) -> "CallCounter":
        threading.setprofile(self.hook)
        sys.setprofile(self.hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.setprofile(None)
        threading.setprofile(None)      # type: ignore[arg-type]


def count_raftlog(spec: Spec, path: str, payload: bytes, call_ops: int) -> dict[str, float]:
    """Per append: commits, fsynced commits, hand-offs, Ready passes, wake-ups, Python and C calls."""
    counters = Counters()

    async def counted(measure: Callable[[], Awaitable[None]]) -> None:
        counters.install(asyncio.get_running_loop())
        try:
            await measure()
        finally:
            counters.uninstall()
    result = run_raftlog(spec, path + "-counts", payload, counted)
    n = result.appends
    out = {"commits": counters.commits / n, "fsyncs": (counters.commits if spec.sync else 0) / n,
           "hand_offs": counters.off_loop / n, "ready_passes": counters.pumps / n,
           "wakeups": counters.wakeups / n}
    # Python-level calls: a short run, the hook on every thread from before the log opens.
    short = Spec(spec.name, spec.sync, spec.per_op, call_ops, spec.concurrency, max(1, call_ops // 4))
    calls = CallCounter()
    with calls:
        async def hooked(measure: Callable[[], Awaitable[None]]) -> None:
            calls.active = True
            try:
                await measure()
            finally:
                calls.active = False
        run_raftlog(short, path + "-calls", payload, hooked)
    py_calls, c_calls = calls.totals()
    out["python_calls"] = py_calls / short.appends
    out["c_calls"] = c_calls / short.appends
    return out


# ---------------------------------------------------------------- the run

def rounds(args: argparse.Namespace, root: str) -> dict[str, list[dict[str, Result]]]:
    """Every workload, `args.rounds` times, each system once per round, alternating the order."""
    payload = payloads(args.payload)
    out: dict[str, list[dict[str, Result]]] = {}
    all_specs = specs(args)
    for name in args.workload:
        spec = all_specs[name]
        out[name] = []
        for r in range(args.rounds):
            order = SYSTEMS if r % 2 == 0 else tuple(reversed(SYSTEMS))
            got: dict[str, Result] = {}
            for system in order:
                path = os.path.join(root, f"{name}-{system}-{r}")
                got[system] = RUNNERS[system](spec, path, payload)
                shutil.rmtree(path, ignore_errors=True)
            out[name].append(got)
            if not args.quiet:
                print(f"  {name} round {r + 1}: " + ", ".join(
                    f"{s} {got[s].rate:,.0f}/s {got[s].cpu_us:.1f} us CPU" for s in SYSTEMS), file=sys.stderr)
    return out


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(name: str, spec: Spec, runs: list[dict[str, Result]]) -> dict[str, Any]:
    """Median figures per system and the per-round ratios raftlog / reference."""
    systems: dict[str, Any] = {}
    for system in SYSTEMS:
        rs = [r[system] for r in runs]
        systems[system] = {
            "appends_per_s": median([r.rate for r in rs]),
            "cpu_us_per_append": median([r.cpu_us for r in rs]),
            "p50_ms": median([r.percentile(0.5) for r in rs]) if rs[0].latencies_ms else None,
            "p99_ms": median([r.percentile(0.99) for r in rs]) if rs[0].latencies_ms else None,
            "rounds": [{"appends_per_s": r.rate, "cpu_us_per_append": r.cpu_us, "p50_ms": r.percentile(0.5),
                        "p99_ms": r.percentile(0.99)} for r in rs],
        }
    ratios: dict[str, Any] = {}
    for ref in SYSTEMS[1:]:
        per_round = {
            "throughput": [r["raftlog"].rate / r[ref].rate for r in runs],
            "cpu": [r["raftlog"].cpu_us / r[ref].cpu_us for r in runs],
        }
        if runs[0]["raftlog"].latencies_ms:
            per_round["p50"] = [r["raftlog"].percentile(0.5) / r[ref].percentile(0.5) for r in runs]
        ratios[ref] = {k: {"median": median(v), "min": min(v), "max": max(v)} for k, v in per_round.items()}
    return {"workload": name, "spec": asdict(spec), "appends": spec.appends, "systems": systems, "ratios": ratios}


TITLES = {
    "one": "(a) one append at a time, fsync on",
    "concurrent": "(b) {c} concurrent appenders of one entry, fsync on (references: {c} per transaction)",
    "concurrent-nosync": "(b) {c} concurrent appenders of one entry, sync=False (references: {c} per transaction)",
    "many": "(c) append_many({m}), fsync on (references: {m} per transaction)",
}
LABELS = {"raftlog": "raftlog embedded", "lmdb": "raw py-lmdb", "sqlite": "sqlite3 WAL"}


def fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_summary(summary: dict[str, Any], args: argparse.Namespace) -> None:
    spec = summary["spec"]
    title = TITLES[summary["workload"]].format(c=spec["concurrency"], m=spec["per_op"])
    print(f"\n{title}; {args.payload} B payloads, {summary['appends']:,} appends per run, {args.rounds} rounds")
    print(f"  {'system':<18}{'p50 ms':>9}{'p99 ms':>9}{'appends/s':>12}{'CPU us/append':>15}")
    for system in SYSTEMS:
        s = summary["systems"][system]
        print(f"  {LABELS[system]:<18}{fmt(s['p50_ms'], '.3f'):>9}{fmt(s['p99_ms'], '.3f'):>9}"
              f"{s['appends_per_s']:>12,.0f}{s['cpu_us_per_append']:>15.1f}")
    for ref, ratios in summary["ratios"].items():
        parts = [f"{k} {v['median']:.2f}x ({v['min']:.2f}-{v['max']:.2f})" for k, v in ratios.items()]
        print(f"  raftlog / {LABELS[ref]}: " + ", ".join(parts))
    counts = summary.get("counts")
    if counts:
        print("  raftlog per append: " + ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in counts.items()))


def parse(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", action="append", choices=WORKLOADS,
                   help="run only this workload (repeatable; default: all)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per workload")
    p.add_argument("--payload", type=int, default=100, help="payload bytes")
    p.add_argument("--count", type=int, default=2000, help="appends measured per run of `one`")
    p.add_argument("--concurrency", type=int, default=256, help="concurrent appenders in `concurrent`")
    p.add_argument("--concurrent-ops", type=int, default=80, help="appends per appender per run of `concurrent`")
    p.add_argument("--many", type=int, default=1000, help="entries per append_many in `many`")
    p.add_argument("--many-ops", type=int, default=100, help="append_many calls per run of `many`")
    p.add_argument("--call-ops", type=int, default=300,
                   help="operations of the profiled run that counts Python calls (concurrent: in all, "
                        "at least 8 per appender)")
    p.add_argument("--no-counts", action="store_true", help="skip the untimed counting runs")
    p.add_argument("--dir", help="where the data dirs go (default: a new temporary dir, removed after)")
    p.add_argument("--json", help="also write the summaries to this file")
    p.add_argument("--quiet", action="store_true", help="no per-round progress on stderr")
    args = p.parse_args(argv)
    args.workload = args.workload or list(WORKLOADS)
    return args


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    args = parse(argv)
    root = tempfile.mkdtemp(prefix="raftlog-embedded-peers-", dir=args.dir)
    summaries = []
    try:
        all_specs = specs(args)
        results = rounds(args, root)
        for name, runs in results.items():
            summary = summarize(name, all_specs[name], runs)
            if not args.no_counts:
                spec = all_specs[name]
                # Concurrent: enough rounds per appender that starting the tasks is not what is counted.
                call_ops = max(8, args.call_ops // spec.concurrency) if spec.concurrency > 1 else args.call_ops
                if spec.per_op > 1:
                    call_ops = max(1, min(call_ops, 3))
                summary["counts"] = count_raftlog(spec, os.path.join(root, name), payloads(args.payload), call_ops)
            print_summary(summary, args)
            summaries.append(summary)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "summaries": summaries}, f, indent=1)
    return summaries


if __name__ == "__main__":
    main()
