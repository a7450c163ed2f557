"""raftlog: a durable replicated log. Raft in Python, a Cython hot path, LMDB storage."""
from __future__ import annotations

from raftlog.errors import (
    AddressInUse,
    BackupFileError,
    Closed,
    Compacted,
    CorruptLogError,
    DataDirError,
    DataDirLocked,
    FrameError,
    IdentityMismatch,
    LogSafetyError,
    MetricsUnavailable,
    NoLeader,
    NotADirectory,
    NotLeader,
    ProposalDropped,
    RaftlogError,
    Removed,
    SessionExpired,
    Timeout,
    Unreachable,
)
from raftlog.entry import Entry
from raftlog.hot import IMPLEMENTATION

__version__ = "0.1.0"

__all__ = [
    "IMPLEMENTATION", "__version__",
    "RaftlogError", "FrameError", "LogSafetyError", "CorruptLogError", "DataDirError", "IdentityMismatch",
    "NotLeader", "ProposalDropped", "Timeout", "Closed", "Compacted", "SessionExpired", "Entry", "Client",
    "Removed", "TlsFiles",
    "AsyncClient", "DataDirLocked", "NotADirectory", "AddressInUse", "Unreachable", "NoLeader", "RequestRejected",
    "BackupFileError",
    "open", "open_sync", "RaftLog", "SyncRaftLog", "Appended",
    "MetricsUnavailable",
]

_EMBED = ("open", "open_sync", "RaftLog", "SyncRaftLog", "Appended")


def __getattr__(name: str):
    # Client and AsyncClient pull in asyncio; importing them lazily keeps `import raftlog.core`
    # free of asyncio and sockets (docs/architecture.md section 1).
    if name in ("Client", "AsyncClient", "RequestRejected"):
        from raftlog import client
        return getattr(client, name)
    if name == "TlsFiles":        # the ssl module, loaded when asked for (as the client is)
        from raftlog.wire.tls import TlsFiles
        return TlsFiles
    if name in _EMBED:
        from raftlog import embed
        return getattr(embed, name)
    raise AttributeError(f"module 'raftlog' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too, so that dir(raftlog) and help(raftlog) list the whole API.
    return sorted(set(globals()) | set(__all__))
