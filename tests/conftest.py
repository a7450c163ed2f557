"""Shared pytest fixtures."""
from __future__ import annotations

# ---- hot path: every hot-path test runs against the Cython module and its pure twin ----------
import importlib
from types import ModuleType

import pytest

from raftlog import _ext

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
        pytest.skip("RAFTLOG_PURE=1: differential tests need the Cython extension")
    return _hot_module("_log", "cython"), _hot_module("_log", "python")


@pytest.fixture(scope="session")
def both_codec() -> tuple[ModuleType, ModuleType]:
    """(Cython _codec, pure _codec_py) for differential tests."""
    if _ext.PURE:
        pytest.skip("RAFTLOG_PURE=1: differential tests need the Cython extension")
    return _hot_module("_codec", "cython"), _hot_module("_codec", "python")
# ---- end of hot path fixtures ----------------------------------------------------------------
