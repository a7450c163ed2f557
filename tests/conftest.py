"""Shared pytest fixtures; the tier markers (each test is marked by its directory: tests/unit ->
`unit`, tests/sim -> `sim`, tests/process -> `process`, tests/netns -> `netns`); and the skip
policy: with RAFTLOG_REQUIRE_ALL_TESTS=1 only the skips listed in EXPECTED_SKIPS are allowed; any
other skip fails the test (CI sets it). tests/ itself is on sys.path (pyproject's `pythonpath`),
so a test in any tier imports its helpers as `support.<module>`."""
from __future__ import annotations

import importlib
import os
from collections.abc import Generator
from pathlib import Path
from types import ModuleType
from typing import Union

import pytest
from pytest import CollectReport, TestReport

from raftlog import _ext

# ---- tiers: a test's directory is its tier, and its marker ----------------------------------
TESTS_DIR = Path(__file__).resolve().parent
TIERS = ("unit", "sim", "process", "netns")


def tier_of(path: Path) -> str | None:
    """The tier whose directory (tests/<tier>/) holds `path`, or None for a file outside them."""
    try:
        top = path.resolve().relative_to(TESTS_DIR).parts[0]
    except ValueError:
        return None
    return top if top in TIERS else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in a tier directory carries that tier's marker, before `-m` selects by it."""
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(tier)
# ---- end of tiers ----------------------------------------------------------------------------

# ---- skip policy: RAFTLOG_REQUIRE_ALL_TESTS ------------------------------------------------
PURE_NO_DIFFERENTIAL = "RAFTLOG_PURE=1: differential tests need the Cython extension"

REQUIRE_ALL_TESTS = os.environ.get("RAFTLOG_REQUIRE_ALL_TESTS", "") not in ("", "0")

# Skip reason -> why that skip is expected. Keep it short: every entry is a test CI does not run.
EXPECTED_SKIPS: dict[str, str] = {
    PURE_NO_DIFFERENTIAL: "the RAFTLOG_PURE=1 run has no Cython module to compare with; the differential "
                          "tests run in CI's Cython run, where this skip cannot happen",
}


def skip_reason(report: Union[TestReport, CollectReport]) -> str:
    """The reason given to pytest.skip (or a skip marker) for a skipped report."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def fail_unexpected_skip(report: Union[TestReport, CollectReport]) -> None:
    """Under RAFTLOG_REQUIRE_ALL_TESTS, turn a skip whose reason is not in EXPECTED_SKIPS into a failure."""
    if not REQUIRE_ALL_TESTS or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = skip_reason(report)
    if reason in EXPECTED_SKIPS:
        return
    report.outcome = "failed"
    report.longrepr = (f"RAFTLOG_REQUIRE_ALL_TESTS is set and this skipped: {reason}\n"
                       f"(not an expected skip: see EXPECTED_SKIPS in tests/conftest.py)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, TestReport, TestReport]:
    """A test's setup, call or teardown report, with an unexpected skip made a failure."""
    report = yield
    fail_unexpected_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, CollectReport, CollectReport]:
    """A collector's report (a module-level skip lands here), with an unexpected skip made an error."""
    report = yield
    fail_unexpected_skip(report)
    return report
# ---- end of skip policy ----------------------------------------------------------------------

# ---- hot path: every hot-path test runs against the Cython module and its pure twin ----------
HOT_IMPLS = ["python"] if _ext.PURE else ["cython", "python"]


def _hot_module(name: str, impl: str) -> ModuleType:
    """raftlog.<name> (Cython) or raftlog.<name>_py; a missing extension skips unless RAFTLOG_REQUIRE_CYTHON."""
    if impl == "python":
        return importlib.import_module(f"raftlog.{name}_py")
    try:
        return importlib.import_module(f"raftlog.{name}")
    except ImportError as exc:
        if _ext.REQUIRE_CYTHON:
            pytest.fail(f"RAFTLOG_REQUIRE_CYTHON is set but raftlog.{name} does not import: {exc}")
        pytest.skip(f"Cython extension raftlog.{name} is not built ({exc})")


@pytest.fixture(scope="session", params=HOT_IMPLS)
def hot_impl(request: pytest.FixtureRequest) -> str:
    """The hot-path implementation under test: "cython" or "python"."""
    return request.param


@pytest.fixture(scope="session")
def log_mod(hot_impl: str) -> ModuleType:
    """The _log module (LogIndex, match_append, quorum rules) of the implementation under test."""
    return _hot_module("_log", hot_impl)


@pytest.fixture(scope="session")
def codec_mod(hot_impl: str) -> ModuleType:
    """The _codec module (records, batches, frames) of the implementation under test."""
    return _hot_module("_codec", hot_impl)


@pytest.fixture(scope="session")
def both_log() -> tuple[ModuleType, ModuleType]:
    """(Cython _log, pure _log_py) for differential tests."""
    if _ext.PURE:
        pytest.skip(PURE_NO_DIFFERENTIAL)
    return _hot_module("_log", "cython"), _hot_module("_log", "python")


@pytest.fixture(scope="session")
def both_codec() -> tuple[ModuleType, ModuleType]:
    """(Cython _codec, pure _codec_py) for differential tests."""
    if _ext.PURE:
        pytest.skip(PURE_NO_DIFFERENTIAL)
    return _hot_module("_codec", "cython"), _hot_module("_codec", "python")
# ---- end of hot path fixtures ----------------------------------------------------------------
