"""The polling and safety helpers of the process tests, on stubs (no processes): a violation seen once fails.

A committed entry never changes (Raft paper §5.4.3 State Machine Safety; §5.3 Log
Matching), so a disagreement below a commit index, or an acknowledged append missing
where a commit index covers it, is a failure the first time any poll sees it, even if a
later poll would agree. Only "not yet" answers (not converged, a member down or busy)
are polled again.
"""
from __future__ import annotations

import base64
import subprocess
from typing import Callable

import pytest

from raftlog.errors import Timeout
from support.cluster import assert_logs_agree
from support.history_workload import final_committed_log
from support.polling import NotYet, WaitTimeout, wait_for
from support.safety import assert_committed_prefixes_agree, holds_acked


def dump(commit: int, entries: list[tuple[int, bytes]], first_index: int = 1, kind: str = "data") -> dict:
    """An inspect dump holding `entries` as (term, payload) from `first_index` on, committed up to `commit`."""
    return {"commit": commit, "first_index": first_index, "last_index": first_index + len(entries) - 1,
            "entries": [{"index": first_index + k, "term": term, "kind": kind,
                         "data_b64": base64.b64encode(payload).decode()}
                        for k, (term, payload) in enumerate(entries)]}


class StubCluster:
    """Answers `inspect(i)` from a script of polls: each poll is {node id: dump}; the last one repeats."""

    def __init__(self, polls: list[dict[int, dict]]) -> None:
        self.polls = polls
        self.inspected: list[int] = []

    def inspect(self, i: int) -> dict:
        self.inspected.append(i)
        poll = min(self.inspected.count(i), len(self.polls)) - 1
        return self.polls[poll][i]

    def rounds(self) -> int:
        """Polls made so far (each inspects every node once)."""
        return max(self.inspected.count(i) for i in set(self.inspected))


A, B, X = (1, b"a"), (1, b"b"), (1, b"x")
AGREED = {1: dump(2, [A, B]), 2: dump(2, [A, B]), 3: dump(2, [A, B])}


def scripted(*answers: object) -> Callable[[], object]:
    """A check returning (or raising) each answer in turn; the last one repeats."""
    queue = list(answers)

    def check() -> object:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer
    return check


# ---- wait_for -------------------------------------------------------------------------------

def test_an_assertion_in_a_check_fails_at_once_though_the_next_poll_would_pass():
    check = scripted(AssertionError("node 2 disagrees below commit 7"), True)
    with pytest.raises(AssertionError, match="node 2 disagrees below commit 7") as info:
        wait_for("agreement", check, timeout=5, every=0)
    assert not isinstance(info.value, WaitTimeout)


@pytest.mark.parametrize("not_yet", [NotYet("commit 3 of 5"), ConnectionRefusedError(), Timeout("no answer"),
                                     subprocess.CalledProcessError(1, ["raftlog", "inspect"])],
                         ids=["NotYet", "refused", "client-timeout", "cli-failed"])
def test_not_yet_answers_are_polled_again(not_yet):
    assert wait_for("it", scripted(not_yet, None, 0, "done"), timeout=5, every=0) == "done"


def test_an_error_that_is_no_not_yet_answer_fails_at_once():
    with pytest.raises(KeyError):
        wait_for("it", scripted(KeyError("role"), True), timeout=5, every=0)


def test_a_timeout_names_what_was_awaited_and_the_last_answer():
    with pytest.raises(WaitTimeout, match=r"waiting for a leader; last seen: NotYet: terms \{1: 3, 2: 4\}"):
        wait_for("a leader", scripted(None, NotYet("terms {1: 3, 2: 4}")), timeout=0.05, every=0.01)


# ---- the safety checks on dumps ---------------------------------------------------------------

def test_committed_prefixes_may_differ_above_the_lower_commit():
    # Node 3 holds a stale entry at index 2 that it has not committed: it may still be replaced.
    assert_committed_prefixes_agree({1: dump(2, [A, B]), 2: dump(2, [A, B]), 3: dump(1, [A, X])}, {1: b"a"})


def test_a_disagreement_below_the_lower_commit_is_a_violation():
    with pytest.raises(AssertionError, match="node 3 disagrees with node 1 below commit 2 at index 2"):
        assert_committed_prefixes_agree({1: dump(3, [A, B, A]), 2: dump(1, [A]), 3: dump(2, [A, X])}, {})


def test_an_acknowledged_entry_missing_below_commit_is_a_violation():
    with pytest.raises(AssertionError, match="acknowledged entry 2 lost or changed on node 1"):
        assert_committed_prefixes_agree({1: dump(2, [A, X]), 2: dump(2, [A, X])}, {2: b"b"})


def test_an_acknowledged_entry_above_a_nodes_commit_is_not_yet_missing():
    assert_committed_prefixes_agree({1: dump(2, [A, B]), 2: dump(1, [A])}, {2: b"b"})


def test_entries_compacted_into_a_snapshot_are_not_compared():
    assert_committed_prefixes_agree({1: dump(3, [A, B, A]), 2: dump(3, [B, A], first_index=2)}, {2: b"b"})


def test_a_node_serving_another_payload_at_an_acknowledged_index_fails_at_once():
    served = scripted({1: b"a", 2: b"x"}, {1: b"a", 2: b"b"})
    with pytest.raises(AssertionError, match=r"node 2 serves other payloads at acknowledged indexes \[2\]"):
        wait_for("node 2 to serve every acked entry", lambda: holds_acked(served(), {1: b"a", 2: b"b"}, "node 2"),
                 timeout=5, every=0)


def test_a_node_still_missing_acknowledged_entries_is_polled_again():
    served = scripted({1: b"a"}, {1: b"a", 2: b"b"})
    assert wait_for("node 2 to catch up", lambda: holds_acked(served(), {1: b"a", 2: b"b"}, "node 2"),
                    timeout=5, every=0)


# ---- assert_logs_agree and final_committed_log on a stub cluster ------------------------------

def test_assert_logs_agree_fails_on_a_disagreement_below_commit_seen_once():
    cluster = StubCluster([{1: dump(2, [A, B]), 2: dump(2, [A, X]), 3: dump(2, [A, B])}, AGREED])
    with pytest.raises(AssertionError, match="node 2 disagrees with node 1 below commit 2"):
        assert_logs_agree(cluster, [1, 2, 3], {})
    assert cluster.rounds() == 1


def test_assert_logs_agree_fails_on_a_lost_acknowledged_entry_seen_once():
    lost = {1: dump(2, [A, X]), 2: dump(2, [A, X]), 3: dump(2, [A, X])}
    cluster = StubCluster([lost, AGREED])
    with pytest.raises(AssertionError, match="acknowledged entry 2 lost or changed"):
        assert_logs_agree(cluster, [1, 2, 3], {2: b"b"})
    assert cluster.rounds() == 1


def test_assert_logs_agree_fails_on_a_disagreement_seen_before_convergence():
    # Commits differ (not converged: a poll again would be right) but below the lower one they disagree.
    cluster = StubCluster([{1: dump(2, [A, B]), 2: dump(1, [X]), 3: dump(2, [A, B])}, AGREED])
    with pytest.raises(AssertionError, match="node 2 disagrees"):
        assert_logs_agree(cluster, [1, 2, 3], {})


def test_assert_logs_agree_waits_for_convergence():
    behind = {1: dump(2, [A, B]), 2: dump(1, [A, B]), 3: dump(1, [A])}
    cluster = StubCluster([behind, behind, AGREED])
    assert_logs_agree(cluster, [1, 2, 3], {1: b"a", 2: b"b"})
    assert cluster.rounds() == 3


def test_assert_logs_agree_waits_until_the_commit_covers_every_acknowledged_index():
    # Stored commit indexes may lag the leader's acknowledgement for a moment: not yet a loss.
    early = {1: dump(1, [A, B]), 2: dump(1, [A, B]), 3: dump(1, [A, B])}
    cluster = StubCluster([early, AGREED])
    assert_logs_agree(cluster, [1, 2, 3], {2: b"b"})
    assert cluster.rounds() == 2


def test_final_committed_log_fails_on_a_disagreement_below_commit_seen_once():
    cluster = StubCluster([{1: dump(2, [A, B]), 2: dump(2, [A, X]), 3: dump(2, [A, B])}, AGREED])
    with pytest.raises(AssertionError, match="node 2 disagrees with node 1 below commit 2"):
        final_committed_log(cluster, [1, 2, 3], wait_for)
    assert cluster.rounds() == 1


def test_final_committed_log_is_the_agreed_data_once_nothing_uncommitted_is_left():
    uncommitted = {1: dump(2, [A, B]), 2: dump(2, [A, B, X]), 3: dump(2, [A, B])}
    cluster = StubCluster([uncommitted, AGREED])
    assert final_committed_log(cluster, [1, 2, 3], wait_for) == {1: b"a", 2: b"b"}
    assert cluster.rounds() == 2
