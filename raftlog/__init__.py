"""raftlog: a durable replicated log. Raft in Python, a Cython hot path, LMDB storage."""
from __future__ import annotations

from raftlog.errors import (
    Closed,
    CorruptLogError,
    FrameError,
    IdentityMismatch,
    LogSafetyError,
    NotLeader,
    RaftlogError,
    Timeout,
)
from raftlog.hot import IMPLEMENTATION

__version__ = "0.1.0"

__all__ = [
    "IMPLEMENTATION", "__version__",
    "RaftlogError", "FrameError", "LogSafetyError", "CorruptLogError", "IdentityMismatch",
    "NotLeader", "Timeout", "Closed",
]
