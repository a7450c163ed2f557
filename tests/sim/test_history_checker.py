"""The history checker (raftlog/sim/history.py) on fabricated histories.

Each bad history breaks one rule of the log's contract and must be reported; the good ones
(overlapping operations in any order, unknown outcomes present or absent, stale reads that
do not claim to be linearizable) must pass. A randomized generator builds correct histories
from a simulated log and then breaks them in one place, so the checker is shown to catch
each kind of mutation across many shapes, not only in the hand-written cases.
"""
from __future__ import annotations

import math
import random

import pytest

from raftlog.sim.history import History, HistoryViolation, Op, check


class Clock:
    """A settable clock so fabricated histories have exact times."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def at(clock: Clock, t: float) -> None:
    clock.t = t


def good_history() -> tuple[History, dict[int, bytes]]:
    """Three sequential appends at 2, 3, 5 (4 is a no-op), one concurrent unknown at 6, a read."""
    c = Clock()
    h = History(clock=c)
    at(c, 0)
    a = h.begin_append(1, [b"a"])
    at(c, 1)
    h.ok_append(a, 2)
    b = h.begin_append(1, [b"b"])
    at(c, 2)
    h.ok_append(b, 3)
    at(c, 3)
    d = h.begin_append(2, [b"d"])
    u = h.begin_append(3, [b"u"])          # outcome unknown; it did commit
    at(c, 4)
    h.ok_append(d, 5)
    h.unknown(u, "timeout")
    f = h.begin_append(2, [b"f"])
    h.fail(f, "not the leader")
    r = h.begin_read(4, 1, linearizable=True)
    at(c, 5)
    h.ok_read(r, 7, [(2, b"a"), (3, b"b"), (5, b"d"), (6, b"u")])
    return h, {2: b"a", 3: b"b", 5: b"d", 6: b"u"}


def test_a_correct_history_passes_with_counts():
    h, final = good_history()
    rep = check(h.ops, final)
    rep.assert_ok()
    assert (rep.appends_ok, rep.appends_failed, rep.appends_unknown, rep.unknown_present) == (3, 1, 1, 1)
    assert rep.reads_ok == 1 and rep.reads_checked_linearizable == 1 and rep.entries_read == 4
    assert h.counts() == {"append ok": 3, "append unknown": 1, "append failed": 1, "read ok": 1}


def test_unknown_may_be_absent():
    h, final = good_history()
    del final[6]
    for op in h.ops:
        if op.kind == "read":
            op.entries = op.entries[:-1]
    check(h.ops, final).assert_ok()


def violations(ops, final) -> list[str]:
    rep = check(ops, final)
    assert not rep.ok, "the checker accepted a bad history"
    with pytest.raises(HistoryViolation):
        rep.assert_ok()
    return rep.violations


def test_lost_acknowledged_append_is_caught():
    h, final = good_history()
    del final[3]
    v = violations(h.ops, final)
    assert any("acknowledged append b'b' (process 1) at index 3 is not there" in x for x in v), v


def test_acknowledged_at_the_wrong_index_is_caught():
    h, final = good_history()
    final[4] = final.pop(3)
    assert any("at index 3 is not there" in x for x in violations(h.ops, final))


def test_acknowledged_append_present_twice_is_caught():
    h, final = good_history()
    final[9] = b"a"
    assert any("is also at [9]" in x for x in violations(h.ops, final))


def test_failed_append_present_is_caught():
    h, final = good_history()
    final[8] = b"f"
    assert any("failed append b'f'" in x for x in violations(h.ops, final))


def test_unknown_append_present_twice_or_partly_is_caught():
    h, final = good_history()
    final[8] = b"u"
    assert any("more than once" in x for x in violations(h.ops, final))
    c = Clock()
    h2 = History(clock=c)
    u = h2.begin_append(1, [b"x", b"y"])
    h2.unknown(u)
    assert any("only partly" in x for x in violations(h2.ops, {1: b"x"}))
    assert any("not contiguously" in x for x in violations(h2.ops, {1: b"x", 3: b"y"}))


def test_entry_nobody_appended_is_caught():
    h, final = good_history()
    final[10] = b"phantom"
    assert any("which no client appended" in x for x in violations(h.ops, final))


def test_real_time_order_violation_is_caught():
    # b was acknowledged (t=2) before d began (t=3), yet d got the smaller index.
    h, final = good_history()
    ops = h.ops
    ops[1].index, ops[2].index = 5, 3
    final[3], final[5] = b"d", b"b"
    for op in ops:
        if op.kind == "read":
            op.entries = ((2, b"a"), (3, b"d"), (5, b"b"), (6, b"u"))
    v = violations(ops, final)
    assert any("before the append now at index 3" in x for x in v), v


def test_unknown_append_placed_before_an_earlier_ack_is_caught():
    # u began at t=3, after a was acknowledged at index 2 (t=1): u cannot sit at index 1.
    c = Clock()
    h = History(clock=c)
    a = h.begin_append(1, [b"a"])
    at(c, 1)
    h.ok_append(a, 2)
    at(c, 3)
    u = h.begin_append(2, [b"u"])
    h.unknown(u)
    assert any("before the append now at index 1" in x for x in violations(h.ops, {1: b"u", 2: b"a"}))


def test_concurrent_appends_may_land_in_either_order():
    c = Clock()
    h = History(clock=c)
    a = h.begin_append(1, [b"a"])
    b = h.begin_append(2, [b"b"])
    at(c, 1)
    h.ok_append(b, 1)
    h.ok_append(a, 2)
    check(h.ops, {1: b"b", 2: b"a"}).assert_ok()


def test_read_of_a_lost_entry_is_caught():
    h, final = good_history()
    r = h.begin_read(5, 1)
    h.ok_read(r, 9, [(2, b"a"), (3, b"b"), (5, b"d"), (6, b"u"), (8, b"u2")])
    h.ops.append(Op("append", 9, 4.0, payloads=(b"u2",), outcome="unknown"))
    v = violations(h.ops, final)
    assert any("saw b'u2' at index 8" in x and "later lost" in x for x in v), v


def test_read_with_a_hole_is_caught():
    h, final = good_history()
    r = h.begin_read(5, 2)
    h.ok_read(r, 6, [(2, b"a"), (5, b"d")])
    assert any("misses committed entries at [3]" in x for x in violations(h.ops, final))


def test_read_of_the_future_is_caught():
    c = Clock()
    h = History(clock=c)
    r = h.begin_read(1, 1)
    at(c, 1)
    h.ok_read(r, 2, [(1, b"late")])
    at(c, 2)
    a = h.begin_append(2, [b"late"])
    at(c, 3)
    h.ok_append(a, 1)
    assert any("whose append began later" in x for x in violations(h.ops, {1: b"late"}))


def test_stale_linearizable_read_is_caught_and_a_plain_one_is_only_counted():
    c = Clock()
    h = History(clock=c)
    a = h.begin_append(1, [b"a"])
    at(c, 1)
    h.ok_append(a, 1)
    b = h.begin_append(1, [b"b"])
    at(c, 2)
    h.ok_append(b, 2)
    at(c, 3)
    r = h.begin_read(2, 1, linearizable=True)
    at(c, 4)
    h.ok_read(r, 2, [(1, b"a")])               # misses b, acknowledged before the read began
    assert any("does not reach it" in x for x in violations(h.ops, {1: b"a", 2: b"b"}))
    r.linearizable = False
    rep = check(h.ops, {1: b"a", 2: b"b"})
    rep.assert_ok()
    assert rep.stale_reads == 1
    r.linearizable, r.limited = True, True      # it stopped at its entry limit: not stale
    check(h.ops, {1: b"a", 2: b"b"}).assert_ok()


def test_duplicate_payloads_in_a_history_are_refused():
    h = History()
    h.begin_append(1, [b"x"])
    h.begin_append(2, [b"x"])
    with pytest.raises(ValueError, match="unique"):
        check(h.ops, {})


def test_save_and_load_round_trip(tmp_path):
    h, final = good_history()
    path = str(tmp_path / "h.jsonl")
    h.save(path)
    back = History.load(path)
    assert [o.to_json() for o in back.ops] == [o.to_json() for o in h.ops]
    assert math.isinf([o for o in back.ops if o.outcome == "unknown"][0].end_time)
    check(back.ops, final).assert_ok()


# ---- randomized: correct histories from a simulated log, then one mutation each ---------------

def simulated(rng: random.Random, n_ops: int = 60) -> tuple[list[Op], dict[int, bytes]]:
    """A correct concurrent history: ops take effect at an instant inside their interval, in that order."""
    events = []          # (effect time, op)
    ops: list[Op] = []
    for k in range(n_ops):
        start = rng.uniform(0, 100)
        end = start + rng.uniform(0.01, 10)
        effect = rng.uniform(start, end)
        if rng.random() < 0.7:
            op = Op("append", k % 5, start, payloads=tuple(b"p%d-%d" % (k, j) for j in range(rng.randint(1, 3))))
        else:
            op = Op("read", k % 5, start, start=rng.randint(1, 20), linearizable=True)
        op.end_time = end
        ops.append(op)
        events.append((effect, op))
    log: dict[int, bytes] = {}
    index = 0
    for _effect, op in sorted(events, key=lambda e: e[0]):
        if op.kind == "append":
            fate = rng.random()
            if fate < 0.1:
                op.outcome = "failed"
                continue
            index += rng.randint(0, 1)        # a no-op or config entry may sit in between
            op.index = index + 1
            for p in op.payloads:
                index += 1
                log[index] = p
            if fate < 0.2:
                op.outcome, op.end_time = "unknown", math.inf
            else:
                op.outcome = "ok"
        else:
            op.outcome = "ok"
            op.next_index = index + 1
            op.entries = tuple((i, log[i]) for i in sorted(log) if i >= op.start)
    return ops, log


def test_random_correct_histories_pass():
    for seed in range(300):
        ops, log = simulated(random.Random(seed))
        rep = check(ops, log)
        assert rep.ok, (seed, rep.violations)


@pytest.mark.parametrize("mutation", ["drop", "move", "swap", "fail", "read-lost", "read-hole", "phantom"])
def test_random_histories_with_one_mutation_are_caught(mutation):
    caught = tried = 0
    for seed in range(200):
        rng = random.Random(seed)
        ops, log = simulated(rng)
        acked = [o for o in ops if o.kind == "append" and o.outcome == "ok"]
        reads = [o for o in ops if o.kind == "read" and o.entries]
        if len(acked) < 2 or not reads:
            continue
        log = dict(log)
        if mutation == "drop":
            op = rng.choice(acked)
            del log[op.index]
        elif mutation == "move":
            op = rng.choice(acked)
            log[max(log) + 5] = log.pop(op.index)
        elif mutation == "swap":
            # two acknowledged appends, the first ended before the second began: swap their places
            pairs = [(a, b) for a in acked for b in acked if a.end_time < b.start_time and len(a.payloads) == 1
                     and len(b.payloads) == 1]
            if not pairs:
                continue
            a, b = rng.choice(pairs)
            a.index, b.index = b.index, a.index
            log[a.index], log[b.index] = a.payloads[0], b.payloads[0]
            for r in ops:
                if r.kind == "read" and r.entries:
                    r.entries = tuple((i, log[i]) for i, _ in r.entries)
        elif mutation == "fail":
            op = rng.choice(acked)
            op.outcome = "failed"
        elif mutation == "read-lost":
            r = rng.choice(reads)
            i, p = r.entries[-1]
            del log[i]
            for o in ops:
                if p in o.payloads:
                    o.outcome, o.end_time = "unknown", math.inf
        elif mutation == "read-hole":
            r = rng.choice(reads)
            r.entries = r.entries[:-1]
        elif mutation == "phantom":
            log[max(log) + 1] = b"nobody"
        tried += 1
        if not check(ops, log).ok:
            caught += 1
    assert tried >= 50
    assert caught == tried, f"{mutation}: caught {caught} of {tried}"
