"""NodePort: the narrow face of a running node that its services (client service, proposals,
sessions, reads, membership, snapshots) see, and nothing more.

The node (runtime/node.py) implements it; services never import Node, and reach each other
only through the public methods of the objects the node hands them at construction. Test
doubles implement this protocol whole, so no service probes for parts with getattr.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from raftlog.core.rawnode import RawNode
from raftlog.core.storage import Storage

if TYPE_CHECKING:
    from raftlog.runtime.connection import Connection


class Joining(Protocol):
    """How a node started with `join` becomes a member (raftlog/joiner.py: as a client of the cluster)."""

    def start(self) -> None:
        """Begin joining in the background."""

    async def stop(self) -> None:
        """Stop trying (the node is shutting down)."""


class NodePort(Protocol):
    """What a service may use of its node: identity, the engine, storage, the write budget, replies."""

    node_id: int
    raw: RawNode                  # the engine (PRECONDITION: the node has started)
    storage: Storage
    applied_index: int            # the last index handed to the services as committed
    corrupt_index: Any            # a stored entry that failed its CRC when read (None when none)

    @property
    def leader_id(self) -> int:
        """The leader this node knows of (0 when none)."""

    @property
    def stopping(self) -> bool:
        """True once the node began shutting down."""

    def address_of(self, node_id: int) -> str:
        """HOST:PORT of member `node_id` ("" when unknown)."""

    def add_peer(self, node_id: int, address: str) -> None:
        """Member `node_id` is at `address` (learned from a configuration): remember it and dial it."""

    def forget_incarnations_but(self, members: frozenset[int]) -> None:
        """A committed configuration names `members`: forget, durably, the data-dir incarnations of everyone else."""

    def kick(self) -> None:
        """Ask for a Ready pass at the end of this event-loop turn."""

    def write_budget_left(self) -> bool:
        """True while the next transaction may take more entries."""

    def note_unwritten(self, count: int, nbytes: int) -> None:
        """Count entries handed to the engine against the write budget (negative: take them back)."""

    def status(self) -> dict:
        """The node's status as JSON-ready data."""

    def reply(self, conn: "Connection", frame: bytes) -> None:
        """Send a reply frame to a client; stop reading its requests while it does not read replies."""

    def error(self, conn: "Connection", request_id: int, code: int, message: str) -> None:
        """Answer request `request_id` with error `code` (ERR_NOT_LEADER names the leader and its address)."""
