"""A history of client operations and a checker for what a replicated log promises about it.

Tests (and anyone running raftlog under faults) record every operation a client performs,
with the time it began, the time it ended, and its outcome, and after the run hand the
history and the final committed log to `check`. The checker knows nothing about Raft; it
checks the log's contract from the outside:

1. Every acknowledged append is in the final log at the index it was acknowledged with, and
   nowhere else (payloads are unique per history, so "nowhere else" is checkable).
2. An append acknowledged before another began has a smaller index (real-time order).
   Appends whose outcome was unknown but which are found in the final log take part too,
   with an end time of "never": they constrain what must come before them, not after.
3. Failed appends are absent from the final log; unknown ones may be present (once) or not.
4. A read never shows an entry that is not in the final log at that index (nothing read is
   later lost), nor a payload nobody had begun to append by the time the read ended.
5. A read covering [start, next) shows exactly the final log's data entries in that range
   (no holes: it reads a committed prefix, not a sample).
6. A read marked `linearizable` sees every append acknowledged before the read began whose
   index is at or after its start (unless the read stopped at its entry limit first).
   Reads not marked so are counted when they would have failed this check ("stale"), which
   is information, not a violation: such reads promise committed data, not recency.

Times are `time.monotonic()` seconds from one clock (one process records the history).
An operation whose reply never came is `unknown`; the checker treats its end as infinity.
The history can be saved as JSON lines and loaded again, so a failing run can be re-checked.
"""
from __future__ import annotations

import bisect
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

__all__ = ["Op", "History", "Report", "check", "HistoryViolation"]

OK = "ok"
FAILED = "failed"
UNKNOWN = "unknown"
PENDING = "pending"


class HistoryViolation(AssertionError):
    """The history breaks the log's contract; the message lists the first violations."""


@dataclass
class Op:
    """One client operation.

    kind "append": `payloads` (each unique in the history); when ok, `index` is the index of
    the first payload and the others follow it.
    kind "read": `start` and, when ok, `next_index` (the read covered [start, next_index)),
    `entries` (index, payload) of the data entries it returned, `limited` (it stopped at its
    entry limit), `linearizable` (the read claims to reflect every earlier acknowledged append).
    """

    kind: str
    process: int
    start_time: float
    payloads: tuple[bytes, ...] = ()
    start: int = 0
    linearizable: bool = False
    end_time: float = math.inf
    outcome: str = PENDING
    index: int = 0
    next_index: int = 0
    entries: tuple[tuple[int, bytes], ...] = ()
    limited: bool = False
    node: str = ""
    note: str = ""

    def to_json(self) -> dict:
        """A JSON-ready dict (payloads as latin-1 text, which round-trips any bytes)."""
        return {
            "kind": self.kind, "process": self.process, "start_time": self.start_time,
            "end_time": None if math.isinf(self.end_time) else self.end_time, "outcome": self.outcome,
            "payloads": [p.decode("latin-1") for p in self.payloads], "index": self.index, "start": self.start,
            "next_index": self.next_index, "entries": [[i, p.decode("latin-1")] for i, p in self.entries],
            "limited": self.limited, "linearizable": self.linearizable, "node": self.node, "note": self.note,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Op":
        """The inverse of to_json."""
        return cls(kind=d["kind"], process=d["process"], start_time=d["start_time"],
                   end_time=math.inf if d["end_time"] is None else d["end_time"], outcome=d["outcome"],
                   payloads=tuple(p.encode("latin-1") for p in d["payloads"]), index=d["index"], start=d["start"],
                   next_index=d["next_index"], entries=tuple((i, p.encode("latin-1")) for i, p in d["entries"]),
                   limited=d["limited"], linearizable=d["linearizable"], node=d.get("node", ""),
                   note=d.get("note", ""))


class History:
    """A thread-safe recorder of operations: `begin_*` when a request is sent, then `ok`/`fail`/`unknown`.

    Every outcome method stamps the end time itself, so the recorded interval always
    contains the real one (begin is called before the request leaves, the outcome after the
    reply arrived).
    """

    def __init__(self, clock=time.monotonic) -> None:  # noqa: ANN001 - any zero-argument float clock
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._clock = clock

    def begin_append(self, process: int, payloads: Iterable[bytes], node: str = "") -> Op:
        """Record an append about to be sent."""
        op = Op("append", process, self._clock(), payloads=tuple(bytes(p) for p in payloads), node=node)
        with self._lock:
            self.ops.append(op)
        return op

    def begin_read(self, process: int, start: int, *, linearizable: bool = False, node: str = "") -> Op:
        """Record a read about to be sent."""
        op = Op("read", process, self._clock(), start=start, linearizable=linearizable, node=node)
        with self._lock:
            self.ops.append(op)
        return op

    def ok_append(self, op: Op, first_index: int) -> None:
        """The append was acknowledged at `first_index` (its payloads at first_index, first_index+1, ...)."""
        op.end_time, op.outcome, op.index = self._clock(), OK, first_index

    def ok_read(self, op: Op, next_index: int, entries: Iterable[tuple[int, bytes]], limited: bool = False) -> None:
        """The read returned `entries` covering [op.start, next_index)."""
        op.end_time, op.outcome, op.next_index = self._clock(), OK, next_index
        op.entries, op.limited = tuple((int(i), bytes(p)) for i, p in entries), limited

    def fail(self, op: Op, note: str = "") -> None:
        """The operation definitely did not take effect (an append was refused before being proposed, or replaced)."""
        op.end_time, op.outcome, op.note = self._clock(), FAILED, note

    def unknown(self, op: Op, note: str = "") -> None:
        """No verdict: the reply never came (timeout, connection lost). The end time stays infinite."""
        op.outcome, op.note = UNKNOWN, note

    def counts(self) -> dict[str, int]:
        """Operations by kind and outcome, e.g. {"append ok": 812, "read ok": 300, ...}."""
        out: dict[str, int] = {}
        with self._lock:
            for op in self.ops:
                key = f"{op.kind} {op.outcome}"
                out[key] = out.get(key, 0) + 1
        return out

    def save(self, path: str) -> None:
        """Write the history as JSON lines (one op per line)."""
        with self._lock, open(path, "w") as f:
            for op in self.ops:
                f.write(json.dumps(op.to_json()) + "\n")

    @classmethod
    def load(cls, path: str) -> "History":
        """Read a history written by save."""
        h = cls()
        with open(path) as f:
            h.ops = [Op.from_json(json.loads(line)) for line in f if line.strip()]
        return h


@dataclass
class Report:
    """What `check` found: violations (empty when the history is fine) and counts for the record."""

    violations: list[str] = field(default_factory=list)
    appends_ok: int = 0
    appends_failed: int = 0
    appends_unknown: int = 0
    unknown_present: int = 0
    reads_ok: int = 0
    reads_checked_linearizable: int = 0
    stale_reads: int = 0
    entries_read: int = 0
    final_entries: int = 0

    @property
    def ok(self) -> bool:
        """True when no violation was found."""
        return not self.violations

    def summary(self) -> str:
        """One line of counts (what docs/guarantees.md quotes)."""
        return (f"{self.appends_ok} acknowledged appends, {self.appends_failed} failed, {self.appends_unknown} unknown "
                f"({self.unknown_present} of them committed), {self.reads_ok} reads ({self.entries_read} entries read, "
                f"{self.reads_checked_linearizable} checked as linearizable, {self.stale_reads} stale), "
                f"{self.final_entries} entries in the final log, {len(self.violations)} violations")

    def assert_ok(self, limit: int = 20) -> None:
        """Raise HistoryViolation listing up to `limit` violations, if there are any."""
        if self.violations:
            shown = "\n  ".join(self.violations[:limit])
            more = f"\n  ... and {len(self.violations) - limit} more" if len(self.violations) > limit else ""
            raise HistoryViolation(f"{len(self.violations)} violations ({self.summary()}):\n  {shown}{more}")


def check(ops: Iterable[Op], final_log: Mapping[int, bytes], *, max_violations: int = 1000) -> Report:
    """Check a history against the final committed log (data entries only: index -> payload).

    PRECONDITION: `final_log` is the committed log after every operation ended, read from a
    node (or every node, agreeing) once the cluster healed; payloads are unique per history.
    """
    rep = Report()
    v = rep.violations

    def bad(msg: str) -> None:
        if len(v) < max_violations:
            v.append(msg)

    ops = list(ops)
    rep.final_entries = len(final_log)
    where: dict[bytes, list[int]] = {}
    for index, payload in final_log.items():
        where.setdefault(payload, []).append(index)
    attempted: dict[bytes, Op] = {}
    for op in ops:
        if op.kind == "append":
            for p in op.payloads:
                if p in attempted:
                    raise ValueError(f"payload {p!r} is appended twice in the history: payloads must be unique")
                attempted[p] = op

    # 1-3: appends against the final log. `placed` collects (index, start, end) of every append
    # whose place is known, for the real-time order check.
    placed: list[tuple[int, float, float, Op]] = []
    for op in ops:
        if op.kind != "append":
            continue
        if op.outcome == OK:
            rep.appends_ok += 1
            for k, p in enumerate(op.payloads):
                want = op.index + k
                got = where.get(p, [])
                if got != [want]:
                    if want not in got:
                        found = final_log.get(want)
                        bad(f"acknowledged append {p!r} (process {op.process}) at index {want} is not there "
                            f"(the final log has {found!r} there; the payload is at {got or 'no index'})")
                    else:
                        bad(f"acknowledged append {p!r} at index {want} is also at {sorted(set(got) - {want})}")
            placed.append((op.index, op.start_time, op.end_time, op))
        elif op.outcome == FAILED:
            rep.appends_failed += 1
            for p in op.payloads:
                if p in where:
                    bad(f"failed append {p!r} (process {op.process}, {op.note!r}) is in the final log at {where[p]}")
        else:
            rep.appends_unknown += 1
            got = [where.get(p, []) for p in op.payloads]
            present = [g for g in got if g]
            if any(len(g) > 1 for g in got):
                bad(f"append of unknown outcome {op.payloads!r} is in the final log more than once: {got}")
            elif present:
                rep.unknown_present += 1
                first = present[0][0]
                # One request is one contiguous batch: all of it or none of it.
                if len(present) != len(got) or [g[0] for g in got] != list(range(first, first + len(got))):
                    bad(f"append of unknown outcome {op.payloads!r} is only partly or not contiguously "
                        f"in the final log: {got}")
                else:
                    placed.append((first, op.start_time, math.inf, op))
    for payload, idxs in where.items():
        if payload not in attempted:
            bad(f"the final log holds {payload!r} at {idxs}, which no client appended")

    # 2: real-time order. Sweep the appends by start time; `done` holds the ones that ended
    # before the current start; the largest index among them must be below the current index.
    by_end = sorted((p for p in placed if not math.isinf(p[2])), key=lambda p: p[2])
    j = 0
    best: Optional[tuple[int, float, float, Op]] = None
    for cur in sorted(placed, key=lambda p: p[1]):
        while j < len(by_end) and by_end[j][2] < cur[1]:
            if best is None or by_end[j][0] > best[0]:
                best = by_end[j]
            j += 1
        if best is not None and best[0] >= cur[0]:
            bad(f"append at index {best[0]} (process {best[3].process}) was acknowledged at {best[2]:.6f}, before "
                f"the append now at index {cur[0]} (process {cur[3].process}) began at {cur[1]:.6f}")

    # 4-6: reads.
    final_sorted = sorted(final_log)
    acked = sorted((op.end_time, op.index + len(op.payloads) - 1) for op in ops
                   if op.kind == "append" and op.outcome == OK)
    acked_ends = [t for t, _ in acked]
    prefix_max: list[int] = []        # prefix_max[k] = the highest acknowledged index among acked[:k+1]
    for _, last in acked:
        prefix_max.append(max(last, prefix_max[-1]) if prefix_max else last)
    for op in ops:
        if op.kind != "read" or op.outcome != OK:
            continue
        rep.reads_ok += 1
        rep.entries_read += len(op.entries)
        seen = dict(op.entries)
        for index, payload in op.entries:
            if not op.start <= index < op.next_index:
                bad(f"read from {op.start} (process {op.process}) returned index {index} outside [{op.start}, "
                    f"{op.next_index})")
            if final_log.get(index) != payload:
                bad(f"read (process {op.process}, node {op.node}) saw {payload!r} at index {index}; the final log "
                    f"has {final_log.get(index)!r} there (an entry that was read was later lost or changed)")
            src = attempted.get(payload)
            if src is not None and src.start_time > op.end_time:
                bad(f"read (process {op.process}) ended at {op.end_time:.6f} but saw {payload!r}, whose append "
                    f"began later, at {src.start_time:.6f}")
        lo = bisect.bisect_left(final_sorted, op.start)
        hi = bisect.bisect_left(final_sorted, op.next_index)
        missing = [i for i in final_sorted[lo:hi] if i not in seen]
        if missing:
            bad(f"read of [{op.start}, {op.next_index}) (process {op.process}, node {op.node}) misses committed "
                f"entries at {missing[:5]}{'...' if len(missing) > 5 else ''}")
        # Linearizability: the highest acknowledged index, among appends that ended before the
        # read began and lie at or after its start, must be inside what the read covered.
        k = bisect.bisect_left(acked_ends, op.start_time)
        need = prefix_max[k - 1] if k and prefix_max[k - 1] >= op.start else 0
        stale = need >= op.next_index and not op.limited
        if op.linearizable:
            rep.reads_checked_linearizable += 1
            if stale:
                bad(f"linearizable read of [{op.start}, {op.next_index}) (process {op.process}, node {op.node}) "
                    f"began at {op.start_time:.6f}, after index {need} was acknowledged, but does not reach it")
        elif stale:
            rep.stale_reads += 1
    return rep
