"""Randomized simulation: thousands of seeds of partitions, crashes, drops, duplicates and long delays.

Each seed runs 2 s of simulated chaos on 3, 5 or 7 nodes, heals, and must elect a leader
and commit a new entry within 5 s of simulated time, then bring every node up to date (see
raftlog.sim.simulation). The default run covers RAFTLOG_SIM_SEEDS=2000 seeds (40% on 3 nodes,
35% on 5, 25% on 7); raise it for a soak, e.g. RAFTLOG_SIM_SEEDS=100000. A failure prints
the seed and the `raftlog sim` command that replays it with a trace. Each seed also derives
its settings from its number (sim.seed_options): half snapshot, two in three are driven like
the runtime, one in four cuts its leaders off at figure 8 moments (leader churn).
"""
from __future__ import annotations

import os

import pytest

from raftlog.core.log import RaftLog
from raftlog.core.raft import Raft
from raftlog.sim.simulation import ALL_FAULTS, InvariantViolation, replay_command, run_seed, seed_churn_options

SEEDS = int(os.environ.get("RAFTLOG_SIM_SEEDS", "2000"))
DURATION_MS = 2000
CHUNKS = 10
SHARE = {3: 0.40, 5: 0.35, 7: 0.25}


def seeds_for(nodes: int, chunk: int) -> range:
    total = max(1, round(SEEDS * SHARE[nodes]))
    per = -(-total // CHUNKS)
    return range(chunk * per, min(total, (chunk + 1) * per))


def run_checked(nodes: int, seed: int) -> None:
    try:
        run_seed(nodes, seed, DURATION_MS)
    except Exception as exc:   # an engine exception is a failure of the seed too
        pytest.fail(f"{type(exc).__name__}: {exc}\n  replay: {replay_command(nodes, seed, DURATION_MS, ALL_FAULTS)}",
                    pytrace=False)


@pytest.mark.parametrize("chunk", range(CHUNKS))
@pytest.mark.parametrize("nodes", sorted(SHARE))
def test_random_seeds(nodes: int, chunk: int) -> None:
    for seed in seeds_for(nodes, chunk):
        run_checked(nodes, seed)


def test_seed_count_covers_the_default() -> None:
    assert sum(len(seeds_for(n, c)) for n in SHARE for c in range(CHUNKS)) >= SEEDS


@pytest.mark.parametrize("seed", [11, 13])      # 13: with leader churn
def test_same_seed_same_run(seed: int) -> None:
    a, b = run_seed(5, seed), run_seed(5, seed)
    assert a.to_dict() == b.to_dict()


def test_randomized_runs_catch_a_missing_up_to_date_check(monkeypatch) -> None:
    """The checks must be able to fail: grant votes without §5.4.1's up-to-date rule and the seeds find it."""
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    caught = 0
    for seed in range(40):
        try:
            run_seed(3, seed, DURATION_MS)
        except InvariantViolation:
            caught += 1
    assert caught > 0


def test_randomized_runs_reach_figure_8(monkeypatch) -> None:
    """The checks must be able to fail: let leaders commit entries of older terms by counting replicas (the rule of
    §5.4.2, figure 8, removed from the engine) and the seeds with leader churn reach figure 8 and catch it."""
    monkeypatch.setattr(Raft, "may_commit_by_counting", lambda self, index: True)
    churn_seeds = [seed for seed in range(400) if seed_churn_options(seed)]
    caught = 0
    for seed in churn_seeds:
        try:
            run_seed(3, seed, DURATION_MS)
        except InvariantViolation:
            caught += 1
    assert caught > 0
