"""Choose the Cython hot path or its pure-Python twin: the only place environment variables are read.

RAFTLOG_PURE=1 selects the twin; RAFTLOG_REQUIRE_CYTHON=1 turns a missing or broken
extension into an ImportError instead of a silent fallback (CI sets it).
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE = os.environ.get("RAFTLOG_PURE", "") not in ("", "0")
REQUIRE_CYTHON = os.environ.get("RAFTLOG_REQUIRE_CYTHON", "") not in ("", "0")

if PURE and REQUIRE_CYTHON:
    raise ImportError("RAFTLOG_PURE and RAFTLOG_REQUIRE_CYTHON are both set")


def load(name: str) -> tuple[ModuleType, str]:
    """Import hot-path module `name` ("_log", "_codec") and return it with its implementation name."""
    if not PURE:
        try:
            return importlib.import_module(f"raftlog.{name}"), "cython"
        except ImportError:
            if REQUIRE_CYTHON:
                raise
    return importlib.import_module(f"raftlog.{name}_py"), "python"
