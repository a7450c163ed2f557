"""scripts/mutation_check.py: every mutation still applies to the source, and drift is reported, not ignored."""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "mutation_check", Path(__file__).resolve().parents[2] / "scripts" / "mutation_check.py")
mutation_check = importlib.util.module_from_spec(_SPEC)
sys.modules["mutation_check"] = mutation_check      # (dataclasses look their module up by name)
_SPEC.loader.exec_module(mutation_check)


def test_every_mutation_applies_exactly_once_to_the_current_source() -> None:
    """A refactor that moves a mutated line fails here, not months later when someone runs the check."""
    mutation_check.check_applies(mutation_check.REPO, mutation_check.MUTATIONS)
    assert len({m.id for m in mutation_check.MUTATIONS}) == len(mutation_check.MUTATIONS)


def test_drifted_source_is_reported_and_a_mutation_changes_only_its_copy(tmp_path: Path) -> None:
    m = next(m for m in mutation_check.MUTATIONS if m.id == "figure-8")
    copy = tmp_path / "repo"
    (copy / Path(m.path).parent).mkdir(parents=True)
    shutil.copy(mutation_check.REPO / m.path, copy / m.path)
    mutation_check.apply(copy, m)
    assert m.new in (copy / m.path).read_text() and m.old in (mutation_check.REPO / m.path).read_text()
    with pytest.raises(mutation_check.Drifted, match="figure-8: the text to replace occurs 0 times"):
        mutation_check.check_applies(copy, (m,))
