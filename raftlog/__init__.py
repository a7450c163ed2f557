"""raftlog: a durable replicated log. Raft in Python, a Cython hot path, LMDB storage."""
from __future__ import annotations

from raftlog.errors import (
    BackupFileError,
    Closed,
    Compacted,
    CorruptLogError,
    DataDirError,
    FrameError,
    IdentityMismatch,
    LogSafetyError,
    NotLeader,
    ProposalDropped,
    RaftlogError,
    SessionExpired,
    Timeout,
)
from raftlog.entry import Entry
from raftlog.hot import IMPLEMENTATION

__version__ = "0.1.0"

__all__ = [
    "IMPLEMENTATION", "__version__",
    "RaftlogError", "FrameError", "LogSafetyError", "CorruptLogError", "DataDirError", "IdentityMismatch",
    "NotLeader", "ProposalDropped", "Timeout", "Closed", "Compacted", "SessionExpired", "Entry", "Client",
    "AsyncClient", "BackupFileError",
    "open", "open_sync", "RaftLog", "SyncRaftLog", "Appended",
]

_EMBED = ("open", "open_sync", "RaftLog", "SyncRaftLog", "Appended")


def __getattr__(name: str):
    # Client and AsyncClient pull in asyncio; importing them lazily keeps `import raftlog.core`
    # free of asyncio and sockets (docs/architecture.md section 1).
    if name in ("Client", "AsyncClient"):
        from raftlog import client
        return getattr(client, name)
    if name in _EMBED:
        from raftlog import embed
        return getattr(embed, name)
    raise AttributeError(f"module 'raftlog' has no attribute {name!r}")
