"""runtime/leadership.py: which (term, leader) transitions are reported, and the subscription's life."""
from __future__ import annotations

from raftlog.runtime.leadership import LeaderWatch


def test_changes_reported_are_new_leaders_no_leader_and_a_new_term_of_the_same_leader() -> None:
    watch = LeaderWatch()
    got: list[tuple[int, int | None]] = []
    watch.subscribe(lambda term, leader: got.append((term, leader)), now=True)
    for term, leader in [(5, 0), (6, 0), (6, 2), (6, 2), (7, 0), (8, 0), (8, 3), (9, 3)]:
        watch.observe(term, leader)
    assert got == [(0, None), (6, 2), (7, None), (8, 3), (9, 3)]
    assert watch.current == (9, 3)


def test_a_new_subscriber_first_hears_the_current_term_even_without_a_leader() -> None:
    watch = LeaderWatch()
    watch.observe(4, 0)
    got: list[tuple[int, int | None]] = []
    watch.subscribe(lambda term, leader: got.append((term, leader)), now=True)
    assert got == [(4, None)]


def test_a_raising_listener_stays_subscribed_and_unsubscribe_and_close_work(caplog) -> None:
    watch = LeaderWatch()
    calls: list[int] = []
    closed: list[bool] = []

    def bad(term: int, leader: int | None) -> None:
        calls.append(term)
        raise RuntimeError("listener bug")
    watch.subscribe(bad)
    stop = watch.subscribe(lambda term, leader: calls.append(-term), on_close=lambda: closed.append(True))
    watch.observe(1, 1)
    watch.observe(2, 2)
    assert calls == [1, -1, 2, -2] and "listener bug" in caplog.text
    stop()
    watch.observe(3, 1)
    assert calls[-1] == 3
    watch.close()
    assert closed == []                              # unsubscribed before the close
    late: list[bool] = []
    watch.subscribe(lambda term, leader: None, on_close=lambda: late.append(True))
    assert late == [True]                            # subscribing after the close: told at once
