"""`raftlog sim`: deterministic output, invariant report, non-zero exit when an invariant breaks."""
from __future__ import annotations

from click.testing import CliRunner

from raftlog.cli import main
from raftlog.core import raft as raft_module

ARGS = ["sim", "--nodes", "5", "--seed", "7", "--duration", "3s", "--faults", "partition,crash,drop", "--trace"]


def test_sim_prints_trace_and_results_deterministically() -> None:
    first = CliRunner().invoke(main, ARGS)
    second = CliRunner().invoke(main, ARGS)
    assert first.exit_code == 0, first.output
    assert first.output == second.output
    assert "became leader at term" in first.output
    assert "ok    election safety" in first.output
    assert "elections" in first.output and "dropped" in first.output


def test_sim_exits_non_zero_when_an_invariant_breaks(monkeypatch) -> None:
    monkeypatch.setattr(raft_module, "AFTER_PERSIST", frozenset())   # acks before persisting
    result = CliRunner().invoke(main, ["sim", "--nodes", "3", "--seed", "1", "--duration", "1s"])
    assert result.exit_code == 1
    assert "INVARIANT BROKEN" in result.output and "replay: raftlog sim --nodes 3 --seed 1" in result.output


def test_sim_rejects_unknown_fault() -> None:
    result = CliRunner().invoke(main, ["sim", "--faults", "meteor"])
    assert result.exit_code == 2
