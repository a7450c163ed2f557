"""Exactly-once appends on a running node: the runtime side of core/sessions.py.

A session append is a client Append whose records are one KIND_SESSION header (session,
seq, floor, count) followed by `count` data records. Every node applies the headers of its
committed log to a SessionTable (rebuilt from the log at start); the leader answers:
- a request already applied: Appended with the ORIGINAL first index, at once;
- a request in flight in this term: Appended when that entry commits;
- an unknown session at seq > 1: error ERR_SESSION_EXPIRED (the client raises SessionExpired);
- otherwise: the records are appended, the header stamped with the leader's clock in
  milliseconds (the log's clock, used for expiry: never a follower's clock).
A new leader holds session requests (up to their deadline) until it has applied the first
entry of its term: only then does its table cover every request an earlier leader appended.
"""
from __future__ import annotations

import io
import logging
import struct
import time
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, NamedTuple, Optional

from raftlog.core.sessions import DEFAULT_TIMEOUT_MS, SessionFront, SessionTable, decode_header, restamp
from raftlog.errors import NotLeader, ProposalDropped
from raftlog.hot import ERR_BAD_REQUEST, ERR_NOT_LEADER, ERR_TIMEOUT, RecordBatch, encode_appended

if TYPE_CHECKING:
    from raftlog.runtime.connection import Connection
    from raftlog.runtime.node import Node

log = logging.getLogger("raftlog.sessions")

ERR_SESSION_EXPIRED = 9
REBUILD_CHUNK_BYTES = 4 << 20


class _Op(NamedTuple):
    conn: "Connection"
    request_id: int
    records: RecordBatch
    session: int
    seq: int
    deadline: float


class SessionService:
    """One node's session table and the leader's handling of session appends."""

    def __init__(self, node: "Node", timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        self.node = node
        self.table = SessionTable(timeout_ms)
        self.front = SessionFront(self.table)
        self.waiting: list[_Op] = []

    def load(self, data: bytes) -> None:
        """Replace the table by one restored from a snapshot (it covers the log up to its `position`)."""
        self.table = SessionTable.from_bytes(data)
        self.front.table = self.table
        self.front.inflight.clear()
        log.info("node %d: %d client sessions restored from a snapshot (log position %d)", self.node.node_id,
                 len(self.table.sessions), self.table.position)

    def rebuild(self) -> None:
        """Apply the session headers of the log already applied (start-up): the table is a function of the log.

        A snapshot restored at start carries the table up to its position; only the log after it is scanned.
        """
        app = getattr(self.node, "app", None)
        restored = getattr(app, "restored_sessions", None)
        if restored is not None:
            self.load(restored)
            app.restored_sessions = None
        storage = self.node.storage
        lo = max(storage.first_index(), self.table.position + 1)
        hi = self.node.applied_index
        n = 0
        while lo <= hi:
            batch = storage.records(lo, hi + 1, REBUILD_CHUNK_BYTES)
            self.table.apply_batch(lo, batch)
            lo += len(batch)
            n += len(batch)
        if self.table.sessions:
            log.info("node %d: %d client sessions rebuilt from %d log entries", self.node.node_id,
                     len(self.table.sessions), n)

    def on_committed(self, first: int, batch: RecordBatch) -> None:
        self.table.apply_batch(first, batch)
        self.front.applied_to(first + len(batch) - 1)

    # -- requests ---------------------------------------------------------------------------
    def handle(self, conn: "Connection", request_id: int, records: RecordBatch, timeout: float) -> None:
        """A session append (header + data records)."""
        try:
            session, seq, _floor, count, _t = decode_header(records.payload(0))
            if seq < 1 or count != len(records) - 1 or count < 1:
                raise ValueError("the header's count must match the data records that follow it")
        except ValueError as exc:
            self.node.service._error(conn, request_id, ERR_BAD_REQUEST, f"bad session append: {exc}")
            return
        op = _Op(conn, request_id, records, session, seq, time.monotonic() + timeout)
        if not self._try(op):
            self.waiting.append(op)

    def _try(self, op: _Op) -> bool:
        """Answer or propose `op`; False when it must wait (new leader not ready, budget full)."""
        node = self.node
        service = node.service
        raw = node.raw
        if str(raw.role) != "leader":
            service._error(op.conn, op.request_id, ERR_NOT_LEADER, "not the leader")
            return True
        state, res = self.front.check(raw, op.session, op.seq)
        if state == "wait":
            return False
        if state == "done":
            log.debug("node %d: session %d seq %d already applied at %d", node.node_id, op.session, op.seq, res[0])
            service._reply(op.conn, encode_appended(op.request_id, res[0], res[1]))
            return True
        if state == "pending":
            first, count, term = res
            service.orphans.append(service._pending_type(first + count - 1, term, first, count, op.conn,
                                                         op.request_id, op.deadline))
            return True
        if state == "expired":
            service._error(op.conn, op.request_id, ERR_SESSION_EXPIRED,
                           f"session {op.session:x} expired (idle past {self.table.timeout_ms} ms of log time)")
            return True
        if not node.write_budget_left():
            return False
        batch = restamp(op.records, raw.term, int(time.time() * 1000))
        service.flush_staged()      # plain appends read before this one go first
        try:
            index, term = raw.propose(batch)
        except NotLeader:
            service._error(op.conn, op.request_id, ERR_NOT_LEADER, "not the leader")
            return True
        except ProposalDropped:
            return False
        count = len(batch) - 1
        self.front.proposed(op.session, op.seq, index, count, term)
        node.note_unwritten(len(batch), batch.nbytes)
        service._track(service._pending_type(index + count, term, index + 1, count, op.conn, op.request_id,
                                             op.deadline))
        node.kick()
        return True

    def poll(self) -> None:
        """Retry waiting requests; time out the ones past their deadline."""
        if not self.waiting:
            return
        now = time.monotonic()
        keep = []
        for op in self.waiting:
            if op.conn.closed:
                continue
            if now > op.deadline:
                self.node.service._error(op.conn, op.request_id, ERR_TIMEOUT, "not proposed in time")
                continue
            if not self._try(op):
                keep.append(op)
        self.waiting = keep


# -- snapshots: the table rides in front of an application's image (raftlog.embed) ----------

SNAPSHOT_MAGIC = b"RLSESS01"
_LEN = struct.Struct(">Q")
_CHUNK = 1 << 20


def wrap_snapshot(table: Optional[SessionTable], image: Any) -> Iterator[bytes]:
    """The snapshot's bytes: `MAGIC | len u64 | table` then the application's image (bytes, file or iterable)."""
    if table is not None:
        data = table.to_bytes()
        yield SNAPSHOT_MAGIC + _LEN.pack(len(data)) + data
    if isinstance(image, (bytes, bytearray, memoryview)):
        yield bytes(image)
    elif hasattr(image, "read"):
        while True:
            chunk = image.read(_CHUNK)
            if not chunk:
                break
            yield chunk
    else:
        yield from image


class _Rest(io.RawIOBase):
    """A read-only view of a file from `offset` on: what the application's restore() sees."""

    def __init__(self, f: BinaryIO, offset: int) -> None:
        self.f = f
        self.offset = offset
        f.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return self.f.readinto(b)

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0:
            return self.f.seek(self.offset + pos) - self.offset
        return self.f.seek(pos, whence) - self.offset

    def tell(self) -> int:
        return self.f.tell() - self.offset


def unwrap_snapshot(f: BinaryIO) -> tuple[BinaryIO, Optional[bytes]]:
    """(the application's image as a file, the session table bytes or None for an image without one)."""
    head = f.read(len(SNAPSHOT_MAGIC) + _LEN.size)
    if len(head) == len(SNAPSHOT_MAGIC) + _LEN.size and head.startswith(SNAPSHOT_MAGIC):
        (n,) = _LEN.unpack_from(head, len(SNAPSHOT_MAGIC))
        table = f.read(n)
        return io.BufferedReader(_Rest(f, len(head) + n)), table
    f.seek(0)
    return f, None
