"""LogIndex, match_append and the quorum rules, run against both implementations (fixture log_mod)."""
from __future__ import annotations

from array import array
from types import ModuleType

import pytest

from raftlog.errors import LogSafetyError


def make_log(log_mod: ModuleType, terms: list[int], snapshot_index: int = 0, snapshot_term: int = 0):
    """A LogIndex after a snapshot at (snapshot_index, snapshot_term) holding `terms`."""
    log = log_mod.LogIndex(snapshot_index, snapshot_term)
    log.extend(array("Q", terms))
    return log


# ---- LogIndex -------------------------------------------------------------------------------

def test_empty_log(log_mod: ModuleType) -> None:
    log = log_mod.LogIndex()
    assert (len(log), log.first_index, log.last_index, log.last_term) == (0, 1, 0, 0)
    assert log.term_at(0) == 0
    with pytest.raises(IndexError):
        log.term_at(1)


def test_append_and_term_at(log_mod: ModuleType) -> None:
    log = log_mod.LogIndex()
    log.append(1, 3)
    log.append(2)
    log.append(2, 0)
    assert [log.term_at(i) for i in range(5)] == [0, 1, 1, 1, 2]
    assert (log.last_index, log.last_term, len(log)) == (4, 2, 4)
    for bad in (-1, 5, 2**70, -(2**70)):
        with pytest.raises(IndexError):
            log.term_at(bad)


def test_append_rejects_lower_term_and_negative_count(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [3])
    with pytest.raises(ValueError):
        log.append(2)
    with pytest.raises(ValueError):
        log.append(3, -1)
    with pytest.raises(OverflowError):
        log.append(2**64)
    assert log.last_index == 1


def test_extend_accepts_arrays_sequences_and_iterables(log_mod: ModuleType) -> None:
    log = log_mod.LogIndex()
    log.extend(array("Q", [1, 1]))
    log.extend([2, 2])
    log.extend(t for t in (3, 3))
    log.extend(memoryview(array("Q", [4])))
    assert log.terms(1, 8) == array("Q", [1, 1, 2, 2, 3, 3, 4])


def test_extend_rejects_decreasing_terms_atomically(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [2])
    with pytest.raises(ValueError):
        log.extend([2, 3, 1])
    with pytest.raises(ValueError):
        log.extend([1])
    with pytest.raises(OverflowError):
        log.extend([-1])
    assert log.last_index == 1


def test_growth_keeps_every_term(log_mod: ModuleType) -> None:
    log = log_mod.LogIndex()
    for term in range(1, 3001):
        log.append(term)
    assert log.last_index == 3000
    assert all(log.term_at(i) == i for i in range(1, 3001))


def test_truncate_from(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 1, 2, 3])
    log.truncate_from(5)            # last_index + 1: nothing to drop
    assert log.last_index == 4
    log.truncate_from(3)
    assert (log.last_index, log.last_term) == (2, 1)
    for bad in (0, 4):
        with pytest.raises(IndexError):
            log.truncate_from(bad)
    log.append(5)
    assert log.term_at(3) == 5


def test_compact_to_keeps_the_boundary_term(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 1, 2, 3, 3])
    log.compact_to(0)               # nothing compacted
    assert log.first_index == 1
    log.compact_to(3)
    assert (log.snapshot_index, log.snapshot_term, log.first_index, log.last_index) == (3, 2, 4, 5)
    assert log.term_at(3) == 2
    with pytest.raises(IndexError):
        log.term_at(2)
    with pytest.raises(IndexError):
        log.compact_to(2)
    with pytest.raises(IndexError):
        log.compact_to(6)
    log.compact_to(5)
    assert (len(log), log.last_index, log.last_term) == (0, 5, 3)


def test_compact_then_grow_many_times(log_mod: ModuleType) -> None:
    log = log_mod.LogIndex()
    for round_ in range(50):
        log.extend([round_ + 1] * 40)
        log.compact_to(log.last_index - 5)
    assert (len(log), log.last_index, log.last_term) == (5, 2000, 50)
    assert log.terms(log.first_index, log.last_index + 1) == array("Q", [50] * 5)


def test_reset(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 2, 3])
    log.reset(10, 4)
    assert (len(log), log.first_index, log.last_index, log.last_term, log.term_at(10)) == (0, 11, 10, 4, 4)
    with pytest.raises(ValueError):
        log.reset(-1, 0)
    with pytest.raises(ValueError):
        log_mod.LogIndex(0, -1)
    with pytest.raises(OverflowError):
        log_mod.LogIndex(2**63, 0)


def test_terms_range_is_half_open(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 2, 2, 3], snapshot_index=10, snapshot_term=1)
    assert log.terms(11, 15) == array("Q", [1, 2, 2, 3])
    assert log.terms(12, 12) == array("Q")
    assert log.terms(15, 15) == array("Q")
    for lo, hi in ((10, 12), (11, 16), (13, 12)):
        with pytest.raises(IndexError):
            log.terms(lo, hi)


def test_first_index_of_term_stops_at_first_index(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [2, 2, 3, 3, 3, 4], snapshot_index=4, snapshot_term=2)
    assert log.first_index_of_term(9) == 7
    assert log.first_index_of_term(6) == 5     # term 2 continues into the snapshot: hint stays in the log
    assert log.first_index_of_term(4) == 4     # the snapshot boundary answers itself
    assert log.first_index_of_term(10) == 10
    with pytest.raises(IndexError):
        log.first_index_of_term(3)


def test_find_conflict_by_term(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 1, 3, 3, 5], snapshot_index=2, snapshot_term=1)
    assert log.find_conflict_by_term(7, 4) == 6     # largest index with term <= 4
    assert log.find_conflict_by_term(7, 5) == 7
    assert log.find_conflict_by_term(100, 2) == 4   # index beyond the log starts at last_index
    assert log.find_conflict_by_term(7, 0) == 2     # nothing <= 0 in the log: snapshot_index
    assert log.find_conflict_by_term(1, 9) == 2     # below the snapshot
    assert log.find_conflict_by_term(5, -1) == 2


# ---- match_append (Raft figure 2, AppendEntries receiver rules 2-4) ---------------------------

def test_match_append_rejects_a_short_log_with_term_zero_hint(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 1, 2])
    assert log_mod.match_append(log, 5, 2, array("Q", [2]), 0) == (False, 4, 0)


def test_match_append_rejects_a_term_mismatch_with_first_index_of_that_term(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 2, 2, 2, 3])
    # The follower holds term 2 at index 4; the hint is the first index of term 2 (dissertation 5.3).
    assert log_mod.match_append(log, 4, 3, array("Q", [3]), 0) == (False, 2, 2)


def test_match_append_appends_after_a_match(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 1])
    assert log_mod.match_append(log, 2, 1, array("Q", [1, 2]), 0) == (True, 0, 0)
    assert log_mod.match_append(log, 0, 0, array("Q", [1, 1, 2]), 0) == (True, 0, 2)


def test_match_append_heartbeat_is_a_noop(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 1, 2])
    assert log_mod.match_append(log, 3, 2, array("Q"), 3) == (True, 0, 0)


def test_match_append_stale_duplicate_never_truncates_matching_entries(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 1, 2, 2, 2])
    # A delayed copy of an earlier AppendEntries covering a prefix: everything matches, nothing to do,
    # and in particular the entries after it (4, 5) are kept.
    assert log_mod.match_append(log, 1, 1, array("Q", [1, 2]), 0) == (True, 0, 2)
    assert log_mod.match_append(log, 0, 0, [1, 1, 2, 2, 2], 5) == (True, 0, 5)


def test_match_append_truncates_from_the_first_conflict(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 1, 2, 2, 2])
    assert log_mod.match_append(log, 2, 1, array("Q", [2, 3, 3, 3]), 2) == (True, 4, 1)


def test_match_append_refuses_to_truncate_committed_entries(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 1, 2, 2, 2])
    with pytest.raises(LogSafetyError):
        log_mod.match_append(log, 2, 1, array("Q", [2, 3]), 4)
    with pytest.raises(LogSafetyError):
        log_mod.match_append(log, 2, 1, [2, 3], 5)
    # Conflict just above the commit index is fine.
    assert log_mod.match_append(log, 2, 1, array("Q", [2, 3]), 3) == (True, 4, 1)


def test_match_append_below_the_snapshot_counts_compacted_entries_as_matching(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [2, 2, 3], snapshot_index=5, snapshot_term=1)
    # prev 3 is compacted: entries 4, 5 are committed and skipped, 6.. are compared.
    assert log_mod.match_append(log, 3, 9, array("Q", [1, 1, 2, 2, 3, 4]), 5) == (True, 0, 5)
    assert log_mod.match_append(log, 3, 9, array("Q", [1, 1, 2, 2]), 5) == (True, 0, 4)
    assert log_mod.match_append(log, 1, 9, array("Q", [1, 1]), 5) == (True, 0, 2)
    assert log_mod.match_append(log, 3, 9, array("Q", [1, 1, 2, 3]), 5) == (True, 7, 3)
    with pytest.raises(LogSafetyError):
        log_mod.match_append(log, 3, 9, array("Q", [1, 1, 3]), 6)


def test_match_append_mismatch_at_the_snapshot_boundary(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [2], snapshot_index=5, snapshot_term=1)
    assert log_mod.match_append(log, 5, 1, array("Q", [2]), 5) == (True, 0, 1)
    assert log_mod.match_append(log, 5, 3, array("Q", [3]), 5) == (False, 5, 1)


def test_match_append_accepts_lists_and_out_of_range_prev_term(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 2])
    assert log_mod.match_append(log, 1, 1, [2, 3], 0) == (True, 0, 1)
    assert log_mod.match_append(log, 2, -1, [], 0) == (False, 2, 2)
    assert log_mod.match_append(log, 2, 2**64, [], 0) == (False, 2, 2)
    assert log_mod.match_append(log, 2**70, 1, [], 0) == (False, 3, 0)


def test_match_append_does_not_modify_the_log(log_mod: ModuleType) -> None:
    log = make_log(log_mod, [1, 1, 2])
    log_mod.match_append(log, 1, 1, array("Q", [3, 3, 3]), 0)
    assert log.terms(1, 4) == array("Q", [1, 1, 2])


# ---- quorum rules --------------------------------------------------------------------------

@pytest.mark.parametrize("matches, expected", [
    ([7], 7),
    ([5, 3, 9], 5),
    ([1, 1, 9], 1),
    ([4, 8, 6, 2, 10], 6),
    ([0, 0, 0, 5, 5], 0),
    ([10, 20, 30, 40, 50, 60, 70], 40),
    ([3, 3, 3, 3, 1, 1, 1], 3),
    ([5, 5], 5),          # even sizes: majority of 4 is 3
    ([1, 2, 3, 4], 2),
])
def test_quorum_commit(log_mod: ModuleType, matches: list[int], expected: int) -> None:
    assert log_mod.quorum_commit(matches) == expected
    assert log_mod.quorum_commit(array("Q", matches)) == expected
    assert log_mod.quorum_commit(tuple(reversed(matches))) == expected


def test_quorum_commit_large_and_huge_values(log_mod: ModuleType) -> None:
    assert log_mod.quorum_commit(list(range(100))) == 49   # 51 of 100 hold >= 49
    assert log_mod.quorum_commit(array("Q", [2**64 - 1, 2**64 - 1, 0])) == 2**64 - 1
    assert log_mod.quorum_commit([2**80, 1, 2**80]) == 2**80


def test_quorum_of_nobody_is_an_error(log_mod: ModuleType) -> None:
    with pytest.raises(ValueError):
        log_mod.quorum_commit([])
    with pytest.raises(ValueError):
        log_mod.joint_quorum_commit([], [1])


def test_joint_quorum_needs_both_majorities(log_mod: ModuleType) -> None:
    # Dissertation 4.3: during C_old,new an entry commits only with a majority of each.
    assert log_mod.joint_quorum_commit([9, 9, 1], [2, 3, 3]) == 3
    assert log_mod.joint_quorum_commit([2, 3, 3], [9, 9, 1]) == 3
    assert log_mod.joint_quorum_commit([5, 6, 7], []) == 6
    assert log_mod.joint_quorum_commit(array("Q", [5, 6, 7, 8, 9]), array("Q", [8, 8, 8])) == 7
