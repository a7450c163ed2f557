"""The `wipe` fault: a node loses its whole storage and restarts empty under the same id.

Raft's safety rests on durable state (dissertation 3.8, "Persisted state and server
restarts"): a voter that forgets its vote can vote twice in one term (§5.2, election
safety), and a member that forgets entries it acknowledged breaks the majority that
committed them (§5.4, leader completeness). Without a guard the randomized runs find such a
break; with the incarnation guard (raftlog.core.incarnations: a wiped node comes back with a
new incarnation and every node that knew the old one refuses it) every invariant holds.
"""
from __future__ import annotations

import pytest

from raftlog.core.incarnations import IncarnationBook, Verdict
from raftlog.sim.simulation import ALL_FAULTS, InvariantViolation, SimStats, replay_command, run_seed

WIPE_FAULTS = ALL_FAULTS + ("wipe",)
DURATION_MS = 2000
GUARDED_SEEDS = {3: range(60), 5: range(30)}


def run_guarded(nodes: int, seed: int) -> SimStats:
    try:
        return run_seed(nodes, seed, DURATION_MS, faults=WIPE_FAULTS)
    except Exception as exc:     # an engine exception fails the seed too
        pytest.fail(f"{type(exc).__name__}: {exc}\n  replay: {replay_command(nodes, seed, DURATION_MS, WIPE_FAULTS)}",
                    pytrace=False)


@pytest.mark.parametrize("nodes", sorted(GUARDED_SEEDS))
def test_guard_holds_every_invariant_under_wipes(nodes: int) -> None:
    wipes = refused = 0
    for seed in GUARDED_SEEDS[nodes]:
        stats = run_guarded(nodes, seed)
        wipes += stats.wipes
        refused += stats.refused
    print(f"{nodes} nodes, {len(GUARDED_SEEDS[nodes])} seeds: {wipes} wipes, {refused} refusals, no invariant broken")
    assert wipes and refused, "the seeds must wipe nodes and refuse them, or they test nothing"


def test_without_the_guard_a_wiped_node_breaks_safety() -> None:
    """A wiped voter votes again in a term it voted in, or its lost acks leave a committed entry off a new leader."""
    broken = {}
    for seed in range(40):
        try:
            run_seed(3, seed, DURATION_MS, faults=WIPE_FAULTS, incarnation_guard=False)
        except InvariantViolation as exc:
            broken[seed] = str(exc)
        except Exception:        # the engine noticing a lost log (commit beyond its last index) is no invariant
            pass
    print("\n".join(f"seed {seed}: {what}" for seed, what in sorted(broken.items())))
    assert any("two leaders" in w or "lacks committed entries" in w for w in broken.values()), broken


def test_book_learns_at_first_contact_refuses_another_incarnation_and_forgets_removed_members() -> None:
    book = IncarnationBook({2: 20})
    assert book.check(3, 30) is Verdict.LEARN
    assert book.check(3, 30) is Verdict.ACCEPT
    assert book.check(2, 21) is Verdict.REFUSE
    assert book.check(2, 20) is Verdict.ACCEPT
    assert book.forget_all_but({1, 3})          # member 2 removed from the configuration
    assert book.check(2, 21) is Verdict.LEARN   # ... so it rejoins fresh
    assert not book.forget_all_but({1, 2, 3})
    assert book.known() == {2: 21, 3: 30}
