"""Value types the engine exchanges with storage and the network: Message, HardState, ConfState, SnapshotMeta.

A Message's fields are in the order of `hot.encode_raft`'s arguments, so the transport
encodes with `encode_raft(*msg)` and decodes with `Message(*frame[1:])`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple, Optional

from raftlog.hot import RecordBatch


class MessageType(IntEnum):
    """Raft message types; the values are the wire's msg_type byte."""

    APPEND = 1              # AppendEntries (leader -> follower); empty entries = probe
    APPEND_RESP = 2
    VOTE = 3                # RequestVote
    VOTE_RESP = 4
    PRE_VOTE = 5            # pre-vote (dissertation 9.6): a vote request that changes no term
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9            # InstallSnapshot chunk
    SNAPSHOT_RESP = 10
    TIMEOUT_NOW = 11        # leadership transfer: campaign at once
    READ_INDEX = 12         # follower asks the leader for a read index
    READ_INDEX_RESP = 13


class Message(NamedTuple):
    """One Raft message. Unused fields are 0 / False / b"" / None."""

    type: int
    to: int
    frm: int
    term: int
    log_term: int = 0
    index: int = 0  # type: ignore[assignment]  # the field shadows tuple.index; renaming it would change the API
    commit: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0
    context: bytes = b""
    entries: Optional[RecordBatch] = None


class HardState(NamedTuple):
    """What must be durable before a node speaks: current term, vote in that term, commit index."""

    term: int = 0
    vote: int = 0
    commit: int = 0


@dataclass(frozen=True)
class ConfState:
    """The cluster configuration: voters, learners and, during a joint change, the outgoing voters."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()
    voters_outgoing: tuple[int, ...] = ()
    learners_next: tuple[int, ...] = ()
    auto_leave: bool = False
    # (id, HOST:PORT) of every member whose address is known: replicated with each change so
    # that a joining node and every transport learn new peers from the log (issue 7).
    addresses: tuple[tuple[int, str], ...] = ()

    def to_dict(self) -> dict:
        """A JSON-ready form."""
        return {"voters": list(self.voters), "learners": list(self.learners),
                "voters_outgoing": list(self.voters_outgoing), "learners_next": list(self.learners_next),
                "auto_leave": self.auto_leave, "addresses": {str(i): a for i, a in self.addresses}}

    @classmethod
    def from_dict(cls, d: dict) -> "ConfState":
        """The inverse of to_dict."""
        return cls(tuple(d.get("voters", ())), tuple(d.get("learners", ())),
                   tuple(d.get("voters_outgoing", ())), tuple(d.get("learners_next", ())),
                   bool(d.get("auto_leave", False)),
                   tuple(sorted((int(i), str(a)) for i, a in (d.get("addresses") or {}).items())))


@dataclass(frozen=True)
class SnapshotMeta:
    """Where a snapshot stands in the log: last included index and term, and the configuration then.

    `size` and `crc32` describe the snapshot's bytes (the state machine's image): the
    receiver of an InstallSnapshot transfer checks both before it replaces its state.
    """

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)
    size: int = 0
    crc32: int = 0
