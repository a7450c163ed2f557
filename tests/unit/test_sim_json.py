"""`raftlog sim --json`: one JSON object a script can read, the same run as the text report."""
from __future__ import annotations

import json
import re

from click.testing import CliRunner

from raftlog.cli import main
from raftlog.sim import simulation


def test_sim_json_reports_the_same_run_as_the_text():
    args = ["sim", "--nodes", "3", "--seed", "4", "--duration", "2s"]
    text = CliRunner().invoke(main, args)
    got = CliRunner().invoke(main, args + ["--json"])
    assert text.exit_code == got.exit_code == 0, got.output
    summary = json.loads(got.output)
    assert summary["ok"] is True and summary["violation"] is None
    assert (summary["nodes"], summary["seed"], summary["duration_ms"]) == (3, 4, 2000)
    elections = int(re.search(r"(\d+) elections", text.output).group(1))
    commits = int(re.search(r"(\d+) entries committed", text.output).group(1))
    assert (summary["stats"]["elections"], summary["stats"]["commits"]) == (elections, commits)


def test_sim_json_names_a_broken_invariant_and_exits_1(monkeypatch):
    def broken(self, duration_ms):
        raise simulation.InvariantViolation("two leaders in term 3")
    monkeypatch.setattr(simulation.Simulation, "run", broken)
    got = CliRunner().invoke(main, ["sim", "--nodes", "3", "--duration", "1s", "--json"])
    assert got.exit_code == 1
    summary = json.loads(got.output)
    assert summary["ok"] is False and summary["violation"] == "two leaders in term 3"
    assert summary["replay"].startswith("raftlog sim --nodes 3")


def test_sim_json_with_spares_and_trace_refused():
    got = CliRunner().invoke(main, ["sim", "--nodes", "3", "--spares", "1", "--duration", "1s", "--json"])
    assert got.exit_code == 0 and json.loads(got.output)["voters"] == 3
    assert CliRunner().invoke(main, ["sim", "--json", "--trace"]).exit_code == 2
