"""Reads on a running node: stale reads at once, linearizable and lease reads after their read index
(the runtime side of core/readonly.py).

Wire: a Read request carries its consistency in its own byte (READ_STALE, READ_LINEARIZABLE,
READ_LEASE, wire/requests.py); it returns committed data entries (KIND_DATA only, each with
its index) from this node's applied log, bounded by count and bytes. A read that starts
below the first index the node keeps (compacted: a state machine's snapshot, or retention)
gets ERR_COMPACTED with that first index (the client raises Compacted).

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

from raftlog.errors import Compacted, CorruptLogError, NotLeader
from raftlog.hot import ERR_COMPACTED, ERR_INTERNAL, ERR_NOT_LEADER, ERR_TIMEOUT, KIND_DATA, READ_LEASE, READ_STALE, \
    RecordBatch, encode_entries, encode_error
from raftlog.runtime.port import NodePort
from raftlog.runtime.replies import MAX_READ_BYTES

if TYPE_CHECKING:
    from raftlog.runtime.connection import Connection

log = logging.getLogger("raftlog.reads")

DEFAULT_READ_ENTRIES = 1000
MAX_READ_ENTRIES = 100_000
DEFAULT_READ_BYTES = 1 << 20


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
    """One node's reads: stale ones answered at once, the others waiting for their read index, then for the apply."""

    def __init__(self, port: NodePort, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self.pending: dict[bytes, _Read] = {}
        self._seq = 0

    def request(self, conn: "Connection", request_id: int, start: int, max_entries: int, max_bytes: int,
                consistency: int = READ_STALE) -> None:
        """A Read of committed data entries from `start`: up to max_entries and max_bytes (0 = the defaults)."""
        if consistency == READ_STALE:
            self.serve_stale(conn, request_id, start, max_entries, max_bytes)
            return
        self._seq += 1
        ctx = b"rd" + self._seq.to_bytes(8, "big")
        try:
            self.port.raw.read_index(ctx, lease=consistency == READ_LEASE)
        except NotLeader:
            self.port.error(conn, request_id, ERR_NOT_LEADER, "no leader known: a linearizable read needs one")
            return
        self.pending[ctx] = _Read(conn, request_id, start, max_entries, max_bytes, time.monotonic() + self.timeout)
        self.port.kick()

    def serve_stale(self, conn: "Connection", request_id: int, start: int, max_entries: int, max_bytes: int) -> None:
        """Answer a read from this node's applied log at once."""
        port = self.port
        max_entries = min(max_entries or DEFAULT_READ_ENTRIES, MAX_READ_ENTRIES)
        max_bytes = min(max_bytes or DEFAULT_READ_BYTES, MAX_READ_BYTES)
        storage = port.storage
        first = storage.first_index()
        if start < first:
            self._compacted(conn, request_id, start, first)
            return
        start = max(start, 1)
        hi = min(port.applied_index, start + max_entries - 1)   # inclusive
        if start > hi:
            port.reply(conn, encode_entries(request_id, start, (), b""))
            return
        try:
            batch = storage.records(start, hi + 1, max_bytes)
        except CorruptLogError as exc:
            # Never served: the reader gets an error naming the index, status shows it, and
            # the operator repairs the stopped node from the cluster (`raftlog repair`).
            if port.corrupt_index is None:
                log.error("node %d: %s; not serving it (stop the node and run `raftlog repair DIR --peers ...`)",
                          port.node_id, exc)
            port.corrupt_index = exc.index
            port.error(conn, request_id, ERR_INTERNAL, str(exc))
            return
        except IndexError:   # compacted under us
            self._compacted(conn, request_id, start, storage.first_index())
            return
        n = len(batch)
        keep = [i for i in range(n) if batch.kind(i) == KIND_DATA]
        if len(keep) == n:
            records: RecordBatch | bytes = batch
        else:
            records = b"".join([batch.record(i) for i in keep])
        port.reply(conn, encode_entries(request_id, start + n, [start + i for i in keep], records))

    def _compacted(self, conn: "Connection", request_id: int, start: int, first: int) -> None:
        """Answer a read below the first index kept: ERR_COMPACTED, the first index in the leader-id field."""
        self.port.reply(conn, encode_error(request_id, ERR_COMPACTED, first, "", str(Compacted(start, first))))

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
        applied = self.port.applied_index
        done = [ctx for ctx, r in self.pending.items() if r.index is not None and r.index <= applied]
        for ctx in done:
            r = self.pending.pop(ctx)
            if not r.conn.closed:
                self.serve_stale(r.conn, r.request_id, r.start, r.max_entries, r.max_bytes)

    def expire(self, now: float) -> None:
        """Time out reads that were not released (no quorum, leader lost) or not applied in time."""
        late = [ctx for ctx, r in self.pending.items() if r.deadline < now or r.conn.closed]
        for ctx in late:
            r = self.pending.pop(ctx)
            if not r.conn.closed:
                self.port.error(r.conn, r.request_id, ERR_TIMEOUT,
                                "the read could not be confirmed by a quorum in time")

    def shutdown(self) -> None:
        """Forget every waiting read (their connections are closing)."""
        self.pending.clear()
