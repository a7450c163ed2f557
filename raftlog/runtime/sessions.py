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
import itertools
import logging
import struct
import time
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, NamedTuple, Optional

from raftlog.core.sessions import DEFAULT_TIMEOUT_MS, SessionFront, SessionTable, decode_header, restamp
from raftlog.core.storage import read_in_chunks
from raftlog.errors import NotLeader, ProposalDropped
from raftlog.hot import ERR_BAD_REQUEST, ERR_NOT_LEADER, ERR_SESSION_EXPIRED, ERR_TIMEOUT, RecordBatch, \
    encode_appended
from raftlog.runtime.port import NodePort
from raftlog.runtime.proposals import Proposals
from raftlog.runtime.replies import ClientWaiter
from raftlog.storage.snapshot_files import pieces

if TYPE_CHECKING:
    from raftlog.runtime.connection import Connection

log = logging.getLogger("raftlog.sessions")

class _Op(NamedTuple):
    conn: "Connection"
    request_id: int
    records: RecordBatch
    session: int
    seq: int
    floor: int
    deadline: float


class SessionService:
    """One node's session table and the leader's handling of session appends."""

    def __init__(self, port: NodePort, proposals: Proposals, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        self.port = port
        self.proposals = proposals
        self.table = SessionTable(timeout_ms)
        self.front = SessionFront(self.table)
        self.waiting: list[_Op] = []

    def load(self, data: bytes) -> None:
        """Replace the table by one restored from a snapshot (it covers the log up to its `position`)."""
        self.table = SessionTable.from_bytes(data)
        self.front.table = self.table
        self.front.inflight.clear()
        log.info("node %d: %d client sessions restored from a snapshot (log position %d)", self.port.node_id,
                 len(self.table.sessions), self.table.position)

    def rebuild(self, restored: Optional[bytes] = None) -> None:
        """Apply the session headers of the log already applied (start-up): the table is a function of the log.

        `restored`: the table a snapshot restored at start carried (it covers the log up to
        its position); only the log after it is scanned.
        """
        if restored is not None:
            self.load(restored)
        storage = self.port.storage
        lo = max(storage.first_index(), self.table.position + 1)
        hi = self.port.applied_index
        n = 0
        for first, batch in read_in_chunks(storage, lo, hi):
            self.table.apply_batch(first, batch)
            n += len(batch)
        if self.table.sessions:
            log.info("node %d: %d client sessions rebuilt from %d log entries", self.port.node_id,
                     len(self.table.sessions), n)

    def on_committed(self, first: int, batch: RecordBatch) -> None:
        """Committed entries: apply their session headers to the table."""
        self.table.apply_batch(first, batch)
        self.front.applied_to(first + len(batch) - 1)

    # -- requests ---------------------------------------------------------------------------
    def handle(self, conn: "Connection", request_id: int, records: RecordBatch, timeout: float) -> None:
        """A session append (header + data records)."""
        try:
            session, seq, floor, count, _t = decode_header(records.payload(0))
            if seq < 1 or count != len(records) - 1 or count < 1:
                raise ValueError("the header's count must match the data records that follow it")
        except ValueError as exc:
            self.port.error(conn, request_id, ERR_BAD_REQUEST, f"bad session append: {exc}")
            return
        op = _Op(conn, request_id, records, session, seq, floor, time.monotonic() + timeout)
        if not self._try(op):
            self.waiting.append(op)

    def _try(self, op: _Op) -> bool:
        """Answer or propose `op`; False when it must wait (new leader not ready, budget full)."""
        port = self.port
        raw = port.raw
        if str(raw.role) != "leader":
            port.error(op.conn, op.request_id, ERR_NOT_LEADER, "not the leader")
            return True
        state, res = self.front.check(raw, op.session, op.seq, op.floor)
        if state == "wait":
            return False
        if state == "done":
            log.debug("node %d: session %d seq %d already applied at %d", port.node_id, op.session, op.seq, res[0])
            port.reply(op.conn, encode_appended(op.request_id, res[0], res[1]))
            return True
        if state == "pending":
            first, count, term = res
            self.proposals.watch(first, count, term, op.deadline, ClientWaiter(port, op.conn, op.request_id))
            return True
        if state == "expired":
            port.error(op.conn, op.request_id, ERR_SESSION_EXPIRED,
                       f"session {op.session:x} expired (idle past {self.table.timeout_ms} ms of log time)")
            return True
        if not port.write_budget_left():
            return False
        batch = restamp(op.records, raw.term, int(time.time() * 1000))
        try:
            index, term = self.proposals.propose_now(batch)     # after plain appends read before it
        except NotLeader:
            port.error(op.conn, op.request_id, ERR_NOT_LEADER, "not the leader")
            return True
        except ProposalDropped:
            return False
        count = len(batch) - 1
        self.front.proposed(op.session, op.seq, index, count, term)
        self.proposals.track(index + 1, count, term, op.deadline, ClientWaiter(port, op.conn, op.request_id))
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
                self.port.error(op.conn, op.request_id, ERR_TIMEOUT, "not proposed in time")
                continue
            if not self._try(op):
                keep.append(op)
        self.waiting = keep


# -- snapshots: the table rides in front of an application's image (raftlog.embed) ----------

SNAPSHOT_MAGIC = b"RLSESS01"
_LEN = struct.Struct(">Q")


def wrap_snapshot(table: Optional[SessionTable], image: Any) -> Iterator[bytes]:
    """The snapshot's bytes: `MAGIC | len u64 | table` then the application's image (bytes, file or iterable).

    The table is serialized now, at the snapshot's index: the bytes are consumed later on
    another thread, while the event loop goes on applying entries to the table.
    """
    head = []
    if table is not None:
        data = table.to_bytes()
        head.append(SNAPSHOT_MAGIC + _LEN.pack(len(data)) + data)
    return itertools.chain(head, pieces(image))


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
