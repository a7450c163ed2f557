"""The one propose path (runtime/proposals.py) against a real engine, without sockets or threads.

A single-voter RawNode on MemoryStorage is the engine; `PortDouble` implements NodePort
whole (the same protocol the node implements), and `drive` plays the node's Ready loop.
"""
from __future__ import annotations

import time

import pytest

from raftlog.hot import ERR_NOT_LEADER, ERR_SHUTTING_DOWN, ERR_TIMEOUT
from raftlog.runtime.proposals import Proposals

from support.proposals import PortDouble, Recorder, drive, later, leader_port, records


def test_requests_of_one_turn_are_one_proposal_each_answered_with_its_own_indexes() -> None:
    port = leader_port()
    proposals = Proposals(port)
    base = port.raw.last_index
    waiters = [Recorder() for _ in range(3)]
    for n, w in zip((2, 1, 3), waiters):
        proposals.submit(records(n), later(), w)
    assert all(not w.proposed_at for w in waiters)      # staged until the Ready pass
    proposed_before = port.raw.last_index
    drive(port, proposals)
    assert port.raw.last_index == proposed_before + 6
    assert [w.outcome for w in waiters] == [[("appended", base + 1, 2)], [("appended", base + 3, 1)],
                                            [("appended", base + 4, 3)]]
    assert {w.proposed_at[0][1] for w in waiters} == {port.raw.term}


def test_a_follower_fails_every_request_with_not_leader() -> None:
    port = PortDouble(voters=(1, 2, 3))           # never campaigned: a follower with no leader
    proposals = Proposals(port)
    waiters = [Recorder(), Recorder()]
    for w in waiters:
        proposals.submit(records(1), later(), w)
    proposals.flush()
    assert [w.outcome[0][:2] for w in waiters] == [("failed", ERR_NOT_LEADER)] * 2


def test_requests_over_the_write_budget_wait_in_arrival_order_and_backpressure_is_signalled() -> None:
    port = leader_port()
    signals: list[bool] = []
    proposals = Proposals(port, on_backlog=signals.append)
    port.budget = port.unwritten + 1              # one more request fits in this transaction
    first, second, third = Recorder(), Recorder(), Recorder()
    proposals.submit(records(1), later(), first)
    proposals.submit(records(1), later(), second)     # over budget: backlogged
    proposals.submit(records(1), later(), third)      # behind it, even if budget frees up
    assert signals == [True]
    port.budget = 1 << 30
    drive(port, proposals)
    assert signals[-1] is False
    firsts = [w.outcome[0][1] for w in (first, second, third)]
    assert firsts == sorted(firsts) and len(set(firsts)) == 3


def test_a_request_replaced_by_another_leaders_entry_fails_with_not_leader() -> None:
    port = leader_port()
    proposals = Proposals(port)
    w = Recorder()
    term = port.raw.term
    # A request this node proposed at index 5 in an older term; the committed batch holding
    # index 5 carries the current term, i.e. another leader's entry took the index.
    proposals.watch(5, 1, term - 1, later(), w)
    proposals.submit(records(5), later(), Recorder())
    drive(port, proposals)
    assert w.outcome == [("failed", ERR_NOT_LEADER, "the entries were replaced by another leader; retry")]


def test_deadlines_and_shutdown_answer_every_request_once() -> None:
    port = PortDouble(voters=(1, 2, 3))
    proposals = Proposals(port)
    late, queued, proposed = Recorder(), Recorder(), Recorder()
    proposals.watch(1, 1, 1, time.monotonic() - 1, late)
    proposals.track(2, 1, 1, later(), proposed)
    port.budget = 0
    proposals.submit(records(1), later(), queued)
    proposals.expire(time.monotonic())
    assert late.outcome == [("failed", ERR_TIMEOUT, "not committed in time; the outcome is unknown")]
    proposals.shutdown()
    assert [w.outcome[-1][:2] for w in (late, queued, proposed)] == [
        ("failed", ERR_TIMEOUT), ("failed", ERR_SHUTTING_DOWN), ("failed", ERR_SHUTTING_DOWN)]
    refused = Recorder()
    proposals.submit(records(1), later(), refused)
    assert refused.outcome[0][:2] == ("failed", ERR_SHUTTING_DOWN)
    assert len(proposals) == 0


@pytest.mark.parametrize("gone_at", ["staged", "pending"])
def test_a_waiter_that_went_away_is_dropped_silently(gone_at: str) -> None:
    port = leader_port()
    proposals = Proposals(port)
    w = Recorder()
    proposals.submit(records(1), later(), w)
    if gone_at == "pending":
        proposals.flush()
    w.gone = True
    drive(port, proposals)
    assert w.outcome == []
