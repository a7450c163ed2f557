"""A pytest plugin for scripts/mutation_check.py: records every test outcome and when it happened.

Loaded with `-p mutation_probe` (scripts/ on PYTHONPATH). Appends one JSON line per outcome
to the file named by MUTATION_PROBE_OUT: {"nodeid", "outcome", "seconds"}, where outcome is
"passed" or "failed" (a failing setup, call or teardown, or a module that does not collect)
and seconds count from the start of the session.
"""
from __future__ import annotations

import json
import os
import time

import pytest

_start = time.monotonic()


def _record(nodeid: str, outcome: str) -> None:
    path = os.environ.get("MUTATION_PROBE_OUT")
    if path:
        line = json.dumps({"nodeid": nodeid, "outcome": outcome, "seconds": round(time.monotonic() - _start, 3)})
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")


def pytest_sessionstart(session: pytest.Session) -> None:
    global _start
    _start = time.monotonic()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _record(report.nodeid, "failed")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        _record(report.nodeid, "failed")
    elif report.passed and report.when == "call":
        _record(report.nodeid, "passed")
