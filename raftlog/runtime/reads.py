"""Linearizable and lease reads on a running node (the runtime side of core/readonly.py).

Wire: a Read request carries its consistency in its own byte (READ_STALE, READ_LINEARIZABLE,
READ_LEASE from the codec); a stale read gets this node's applied entries at once.

A linearizable (or lease) read asks the engine for a read index with a fresh context; when
a Ready releases it, the read waits until this node has applied that far and is then served
like a stale read, from the node's own applied log. A node without a leader, or a leader
without a quorum, never releases it: the client gets not-leader or, after the request
timeout, timeout.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from raftlog.errors import NotLeader
from raftlog.hot import ERR_NOT_LEADER, ERR_TIMEOUT, READ_LEASE, READ_LINEARIZABLE, READ_STALE

if TYPE_CHECKING:
    from raftlog.runtime.connection import Connection
    from raftlog.runtime.node import Node

log = logging.getLogger("raftlog.reads")

CONSISTENCY = {"stale": READ_STALE, "linearizable": READ_LINEARIZABLE, "lease": READ_LEASE}


def consistency_code(consistency: str) -> int:
    """The Read frame's consistency byte for "linearizable", "lease" or "stale"; ValueError otherwise."""
    try:
        return CONSISTENCY[consistency]
    except KeyError:
        raise ValueError(f"consistency must be one of {', '.join(CONSISTENCY)}, not {consistency!r}") from None


@dataclass
class _Read:
    conn: "Connection"
    request_id: int
    start: int
    max_entries: int
    max_bytes: int
    deadline: float
    index: Optional[int] = None     # the read index, once released


class Reads:
    """Reads of one node waiting for their read index, then for the node to apply that far."""

    def __init__(self, node: "Node", timeout: float) -> None:
        self.node = node
        self.timeout = timeout
        self.pending: dict[bytes, _Read] = {}
        self._seq = 0

    def request(self, conn: "Connection", request_id: int, start: int, max_entries: int, max_bytes: int,
                code: int) -> None:
        """A Read that asks for consistency `code` (READ_LINEARIZABLE or READ_LEASE)."""
        self._seq += 1
        ctx = b"rd" + self._seq.to_bytes(8, "big")
        try:
            self.node.raw.read_index(ctx, lease=code == READ_LEASE)
        except NotLeader:
            self.node.service._error(conn, request_id, ERR_NOT_LEADER,
                                     "no leader known: a linearizable read needs one")
            return
        self.pending[ctx] = _Read(conn, request_id, start, max_entries, max_bytes, time.monotonic() + self.timeout)
        self.node.kick()

    def on_read_states(self, states: list) -> None:
        """A Ready released reads `(index, ctx)`: note their index, serve those already applied."""
        for index, ctx in states:
            r = self.pending.get(ctx)
            if r is not None and r.index is None:
                r.index = index
        self.serve()

    def serve(self) -> None:
        """Answer every released read whose index this node has applied."""
        if not self.pending:
            return
        applied = self.node.applied_index
        done = [ctx for ctx, r in self.pending.items() if r.index is not None and r.index <= applied]
        for ctx in done:
            r = self.pending.pop(ctx)
            if not r.conn.closed:
                self.node.service.read(r.conn, r.request_id, r.start, r.max_entries, r.max_bytes)

    def expire(self, now: float) -> None:
        """Time out reads that were not released (no quorum, leader lost) or not applied in time."""
        late = [ctx for ctx, r in self.pending.items() if r.deadline < now or r.conn.closed]
        for ctx in late:
            r = self.pending.pop(ctx)
            if not r.conn.closed:
                self.node.service._error(r.conn, r.request_id, ERR_TIMEOUT,
                                         "the read could not be confirmed by a quorum in time")

    def shutdown(self) -> None:
        self.pending.clear()
