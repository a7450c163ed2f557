"""Exactly-once appends with client sessions (dissertation 6.3) in the simulator, and the session table."""
from __future__ import annotations

import pytest

from raftlog.core.sessions import SessionFront, SessionTable, encode_header
from raftlog.sim.simulation import InvariantViolation, SimOptions
from raftlog.sim.sessions import SessionSimulation, run_session_seed


def test_retries_across_crashes_partitions_and_lost_replies_are_applied_once() -> None:
    acks = retries = snaps = 0
    for seed in range(60):
        try:
            sim = run_session_seed(3 if seed % 2 else 5, seed)
        except InvariantViolation as exc:
            pytest.fail(f"{exc}\n  replay: run_session_seed({3 if seed % 2 else 5}, {seed}, trace=print)",
                        pytrace=False)
        acks += sim.acks
        retries += sim.retries
        snaps += sim.snapshots_checked
    assert acks > 1000 and retries > 1000 and snaps > 100


def test_checks_catch_a_leader_that_does_not_deduplicate(monkeypatch) -> None:
    """Must be able to fail: a front that always appends makes retried requests land twice."""
    monkeypatch.setattr(SessionFront, "check", lambda self, raw, session, seq, floor: ("propose", None))
    caught = 0
    for seed in range(10):
        try:
            run_session_seed(3, seed)
        except InvariantViolation:
            caught += 1
    assert caught > 0


def test_checks_catch_a_new_leader_that_answers_before_applying_its_predecessors_log(monkeypatch) -> None:
    """Must be able to fail: skip the "apply your term's first entry first" rule."""
    real = SessionFront.check

    def hasty(self, raw, session, seq, floor):
        state, res = real(self, raw, session, seq, floor)
        if state == "wait":
            st, r = self.table.lookup(session, seq, floor)
            return (st if st != "new" else "propose"), r
        return state, res
    monkeypatch.setattr(SessionFront, "check", hasty)
    caught = 0
    for seed in range(120):
        try:
            run_session_seed(3, seed, faults=("crash", "drop", "delay"))
        except InvariantViolation:
            caught += 1
    assert caught > 0


def test_sessions_expire_by_log_time_only_and_identically_everywhere() -> None:
    sim = SessionSimulation(SimOptions(nodes=3, seed=3, faults=()), clients=2, timeout_ms=1000)
    sim.chaos = False
    assert sim.wait_for_leader(3000)
    a, b = sim.clients
    for _ in range(3):
        sim.drive(a, resend_p=0)
        sim.run_for(50)
        sim.drive(a, resend_p=0)
    assert a.acked
    # b keeps the log's clock moving while a idles past the timeout.
    for _ in range(40):
        sim.drive(b, resend_p=0)
        sim.run_for(50)
    a.seq += 1
    a.payloads = [b"late"]
    sim.send_request(a)
    assert a.expired
    sim.run_for(500)
    tables = {i: sim.tables[i].to_bytes() for i in sim.ids}
    assert len(set(tables.values())) == 1
    assert a.session not in sim.tables[1].sessions and b.session in sim.tables[1].sessions


def test_table_expiry_is_a_function_of_the_log_and_round_trips() -> None:
    t = SessionTable(timeout_ms=100)
    assert t.apply(10, encode_header(7, 1, 1, 2, 1000)) is None
    assert t.apply(13, encode_header(8, 1, 1, 1, 1050)) is None
    assert t.lookup(7, 1, 1) == ("done", (11, 2))
    assert t.apply(15, encode_header(7, 1, 1, 2, 1060)) == (11, 2)        # a duplicate returns the original
    assert t.lookup(7, 2, 2) == ("new", None)
    copy = SessionTable.from_bytes(t.to_bytes())
    for table in (t, copy):
        table.apply(20, encode_header(8, 2, 2, 1, 1200))                 # log time 1200: 7 idle since 1060
    assert t.to_bytes() == copy.to_bytes()
    assert t.lookup(7, 2, 2) == ("expired", None) and t.lookup(8, 2, 2)[0] == "done"
    assert t.lookup(9, 1, 1) == ("new", None) and t.lookup(9, 5, 5) == ("expired", None)
    # A new client's pipelined requests: seq 3 may arrive before seq 1 is applied (floor 1).
    assert t.lookup(9, 3, 1) == ("new", None)
