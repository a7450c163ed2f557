"""Typed errors raised by raftlog; every public error is exported from the package root."""
from __future__ import annotations


class RaftlogError(Exception):
    """Base class of every error raftlog raises on purpose."""


class FrameError(RaftlogError, ValueError):
    """A wire frame or entry record is malformed: bad length, unknown type, truncated, bad CRC.

    `record` is the position of the offending record inside a batch, or None when the
    error is not about one record.
    """

    def __init__(self, message: str, record: int | None = None) -> None:
        super().__init__(message)
        self.record = record


class LogSafetyError(RaftlogError, RuntimeError):
    """An operation would break a Raft safety rule (e.g. truncate a committed entry)."""


class CorruptLogError(RaftlogError):
    """A stored entry failed its CRC or does not parse; `index` names it."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"corrupt log entry at index {index}: {reason}")
        self.index = index
        self.reason = reason


class DataDirError(RaftlogError):
    """A data dir is refused before anything in it is used or changed: damaged, emptied, or not raftlog's.

    The message is one line: the dir, what is wrong with it, and the remedy. `path` is the
    data dir, `problem` what is wrong (without the dir and the remedy).
    """

    def __init__(self, path: str, problem: str, remedy: str) -> None:
        super().__init__(f"data dir {path}: {problem}; {remedy}")
        self.path = path
        self.problem = problem
        self.remedy = remedy


class IdentityMismatch(DataDirError):
    """A data dir belongs to another node or cluster, has an unknown format, or holds no raftlog identity."""


class NotLeader(RaftlogError):
    """The node is not the leader; `leader_id` (0 if unknown) and `leader_address` hint where it is."""

    def __init__(self, leader_id: int = 0, leader_address: str | None = None) -> None:
        where = f"node {leader_id}" if leader_id else "unknown"
        if leader_address:
            where += f" at {leader_address}"
        super().__init__(f"not the leader (leader: {where})")
        self.leader_id = leader_id
        self.leader_address = leader_address


class Timeout(RaftlogError, TimeoutError):
    """An operation did not complete within its deadline; its outcome is unknown."""


class Closed(RaftlogError):
    """The log, node or client has been closed or is shutting down."""


class ProposalDropped(RaftlogError):
    """The leader refused a proposal it could not take now: too many uncommitted bytes, or a leadership transfer."""


class Compacted(RaftlogError, IndexError):
    """Entries before `first_index` were compacted into a snapshot and can no longer be read."""

    def __init__(self, index: int, first_index: int) -> None:
        super().__init__(f"entry {index} was compacted into a snapshot; the log starts at {first_index}")
        self.index = index
        self.first_index = first_index


class SessionExpired(RaftlogError):
    """A client's session expired (idle past the timeout in log time): the request's outcome is unknown."""


class MetricsUnavailable(RaftlogError):
    """Metrics were asked for, but prometheus_client is not installed (pip install 'raftlog[metrics]')."""


class Removed(RaftlogError):
    """This node was removed from the cluster (a committed configuration leaves it out): it no longer serves.

    `node_id` is the removed node (0 when unknown), `members` the current members as
    `{id: "HOST:PORT"}`: send requests there.
    """

    def __init__(self, node_id: int, members: dict[int, str]) -> None:
        super().__init__(removal_line(node_id, members))
        self.node_id = node_id
        self.members = dict(members)


def removal_line(node_id: int, members: dict[int, str]) -> str:
    """`node 3 was removed from the cluster (members 1, 2, 4)`: the one wording of a removal."""
    who = f"node {node_id}" if node_id else "this node"
    return f"{who} was removed from the cluster (members {', '.join(str(m) for m in sorted(members))})"


class Unreachable(RaftlogError, ConnectionError):
    """No member could be reached: every address refused the connection or did not resolve.

    Raised at once (without waiting for the deadline) by a client made with `fail_fast=True`
    (the CLI's); the message names each address and what happened to it.
    """


class NoLeader(Timeout):
    """No leader was found before the deadline; the message says how many members were reachable.

    A Timeout (the outcome of a request sent meanwhile is unknown), so `except Timeout` catches it.
    """


class DataDirLocked(DataDirError):
    """The data dir is already open for writing, by this or another process (one writer per data dir)."""


class NotADirectory(DataDirError, FileExistsError):
    """The data dir path exists and is not a directory (a FileExistsError too, as raised before)."""


class AddressInUse(RaftlogError, OSError):
    """The address to listen on is taken by another node or program; `address` is HOST:PORT, errno EADDRINUSE."""

    def __init__(self, address: str) -> None:
        import errno
        super().__init__(f"cannot listen on {address}: the address is already in use (another node or program)")
        self.errno = errno.EADDRINUSE
        self.address = address


class BackupFileError(RaftlogError):
    """A backup file is refused: not a backup, damaged (crc32), truncated, or of an unknown version (one line)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"backup file {path}: {problem}")
        self.path = path
        self.problem = problem
