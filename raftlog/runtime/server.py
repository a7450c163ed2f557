"""The client service on the node's port: it reads client requests and hands each to the service that owns it.

- Append: plain appends go to the one propose path (runtime/proposals.py), which stages the
  requests of one event-loop turn into one proposal and answers each once committed; a
  connection's plain appends of one turn join one request there (runtime/append_groups.py);
  session appends (exactly-once) to runtime/sessions.py; admin requests (a single KIND_CONF
  record: membership, leadership transfer) to runtime/membership.py, backups to
  runtime/backup.py.
- Read: runtime/reads.py (stale reads at once, linearizable and lease reads after their
  read index).
- Status: the node's JSON status.

Backpressure: while requests wait for the write budget (proposals' backlog), every client
connection stops reading; a client that does not read its replies stops being read
(runtime/replies.py).
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Optional

from raftlog.hot import (
    ERR_BAD_REQUEST,
    ERR_REMOVED,
    ERR_SHUTTING_DOWN,
    ERR_TOO_LARGE,
    FRAME_APPEND,
    FRAME_READ,
    FRAME_STATUS,
    KIND_CONF,
    KIND_SESSION,
    RecordBatch,
    encode_error,
    encode_status_reply,
)
from raftlog.runtime.append_groups import AppendGroups
from raftlog.runtime.backup import BackupService
from raftlog.runtime.membership import Membership
from raftlog.runtime.port import NodePort
from raftlog.runtime.proposals import Proposals
from raftlog.runtime.reads import Reads
from raftlog.runtime.removal import RemovalWatch
from raftlog.runtime.replies import ClientWaiter
from raftlog.runtime.sessions import SessionService
from raftlog.wire.requests import is_backup_request

if TYPE_CHECKING:
    from raftlog.runtime.connection import Connection

MAX_APPEND_BYTES = 4 << 20        # one Append request's records; larger is too-large


class ClientService:
    """Serves client connections for one node: routes each request to the service that owns it."""

    def __init__(self, port: NodePort, proposals: Proposals, sessions: SessionService, membership: Membership,
                 reads: Reads, *, request_timeout: float = 10.0, max_append_bytes: int = MAX_APPEND_BYTES,
                 removal: Optional[RemovalWatch] = None) -> None:
        """`removal`: once it says this node was removed, every request but Status gets ERR_REMOVED."""
        self.port = port
        self.proposals = proposals
        self.sessions = sessions
        self.membership = membership
        self.reads = reads
        self.request_timeout = request_timeout
        self.max_append_bytes = max_append_bytes
        self.removal = removal
        self.conns: set["Connection"] = set()
        self.groups = AppendGroups(port, proposals)    # plain Appends of one connection and turn: one request
        self.stopping = False
        self.backups = BackupService(port)

    # -- connection handler -----------------------------------------------------------------
    def handler_for(self, conn: "Connection") -> "ClientService":
        """The listener's client_handler_factory: this service handles every client connection."""
        self.conns.add(conn)
        conn.on_writable = lambda: self._maybe_resume(conn)
        return self

    def on_close(self, conn: "Connection") -> None:
        self.conns.discard(conn)
        self.groups.close(conn)

    def on_frame(self, conn: "Connection", frame: tuple) -> None:
        ftype = frame[0]
        removal = self.removal
        if removal is not None and removal.removed and ftype != FRAME_STATUS:
            node_id, members, message = removal.refusal()
            self.port.reply(conn, encode_error(frame[1], ERR_REMOVED, node_id, members, message))
            return
        if ftype == FRAME_APPEND:
            self.append(conn, frame[1], frame[2])
        elif ftype == FRAME_READ:
            self.reads.request(conn, frame[1], frame[2], frame[3], frame[4], frame[5])
        elif ftype == FRAME_STATUS:
            self.port.reply(conn, encode_status_reply(frame[1], json.dumps(self.port.status()).encode()))
        else:
            conn.fail(ERR_BAD_REQUEST, f"unexpected frame type {ftype} from a client")

    # -- backpressure -----------------------------------------------------------------------
    def on_backlog(self, waiting: bool) -> None:
        """Proposals' backlog started (stop reading every client) or drained (read those not backed up)."""
        for c in self.conns:
            if waiting:
                c.pause_reading()
            elif not c.write_paused:
                c.resume_reading()

    def _maybe_resume(self, conn: "Connection") -> None:
        if not self.proposals.backlog:
            conn.resume_reading()

    # -- append -----------------------------------------------------------------------------
    def append(self, conn: "Connection", request_id: int, records: RecordBatch) -> None:
        """Route one Append request (plain, session or admin); every outcome is answered on `conn`."""
        port = self.port
        if self.stopping:
            port.error(conn, request_id, ERR_SHUTTING_DOWN, "the node is shutting down")
            return
        if len(records) == 0:
            port.error(conn, request_id, ERR_BAD_REQUEST, "an append needs at least one record")
            return
        if records.nbytes > self.max_append_bytes:
            port.error(conn, request_id, ERR_TOO_LARGE,
                       f"{records.nbytes} bytes in one append; the limit is {self.max_append_bytes}")
            return
        kind = records.kind(0)
        if kind == KIND_CONF:
            self.groups.close(conn)        # what this connection sends after it is proposed after it
            if len(records) != 1:
                port.error(conn, request_id, ERR_BAD_REQUEST, "an admin request is one record")
                return
            if is_backup_request(records):
                self.backups.handle(conn, request_id)
                return
            self.membership.handle(conn, request_id, records, self.request_timeout)
        elif kind == KIND_SESSION:
            self.groups.close(conn)
            self.sessions.handle(conn, request_id, records, self.request_timeout)
        elif records.find_kind(KIND_CONF) >= 0:
            # The engine refuses configuration records among data: proposed alone, so that
            # only this request fails, not the group it would have joined.
            self.proposals.submit(records, time.monotonic() + self.request_timeout,
                                  ClientWaiter(port, conn, request_id))
        else:
            self.groups.add(conn, request_id, records, time.monotonic() + self.request_timeout)

    # -- shutdown ---------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Refuse new requests and close client connections (the node answers what is pending first)."""
        self.stopping = True
        self.backups.shutdown()
        for conn in list(self.conns):
            conn.close()
