"""The client service on the node's port: Append, Read and Status requests.

Append: a request carries a RecordBatch the client encoded with term 0; the requests read
in one event-loop turn go to `RawNode.propose` together as one batch (the engine restamps
the term), and each is tracked as one pending request `(first_index, term, count)`, never
per entry. It is answered when the batch that
holds its last index is committed and locally durable: the same term there means the whole
request is in the log (Log Matching, Raft paper 5.3); another term means a new leader
replaced it, and the client is told to retry (not-leader, with the leader's address).

Reads return committed data entries (KIND_DATA only, each with its index) from this node's
applied log, bounded by count and bytes. Status returns the node's JSON status.

Backpressure: when the next transaction is full (the node's write budget) or the engine
refuses a proposal over its uncommitted budget, requests wait here in arrival order and
every client connection stops reading until the backlog drains; a client that does not
read its replies stops being read.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from raftlog.errors import CorruptLogError, NotLeader, ProposalDropped
from raftlog.hot import (
    ERR_BAD_REQUEST,
    ERR_INTERNAL,
    ERR_NOT_LEADER,
    ERR_SHUTTING_DOWN,
    ERR_TIMEOUT,
    ERR_TOO_LARGE,
    FRAME_APPEND,
    FRAME_READ,
    FRAME_STATUS,
    KIND_CONF,
    KIND_DATA,
    KIND_SESSION,
    READ_STALE,
    RecordBatch,
    encode_appended,
    encode_entries,
    encode_error,
    encode_status_reply,
)

if TYPE_CHECKING:
    from raftlog.runtime.connection import Connection
    from raftlog.runtime.node import Node

log = logging.getLogger("raftlog.server")

MAX_APPEND_BYTES = 4 << 20        # one Append request's records; larger is too-large
DEFAULT_READ_ENTRIES = 1000
MAX_READ_ENTRIES = 100_000
DEFAULT_READ_BYTES = 1 << 20
MAX_READ_BYTES = 16 << 20
REPLY_BACKLOG_BYTES = 2 * MAX_READ_BYTES   # replies queued for one client before its requests wait


class _Pending(NamedTuple):
    last: int          # index of the request's last record
    term: int          # the term it was proposed in
    first: int
    count: int
    conn: "Connection"
    request_id: int
    deadline: float


class _Waiting(NamedTuple):
    conn: "Connection"
    request_id: int
    records: RecordBatch
    deadline: float


class ClientService:
    """Serves client connections for one node; the node calls `on_committed` as it applies."""

    _pending_type = _Pending      # runtime/sessions.py tracks its requests with the same record

    def __init__(self, node: "Node", *, request_timeout: float = 10.0, max_append_bytes: int = MAX_APPEND_BYTES) -> None:
        self.node = node
        self.request_timeout = request_timeout
        self.max_append_bytes = max_append_bytes
        self.pending: deque[_Pending] = deque()     # sorted by `last` (see _track)
        self.backlog: deque[_Waiting] = deque()     # refused by the engine's budget, in arrival order
        self.orphans: list[_Pending] = []           # pending requests overtaken by newer proposals (rare)
        self.staged: list[_Waiting] = []            # read this turn, proposed together by flush_staged
        self.conns: set["Connection"] = set()
        self.stopping = False

    # -- connection handler -----------------------------------------------------------------
    def handler_for(self, conn: "Connection") -> "ClientService":
        """The listener's client_handler_factory: this service handles every client connection."""
        self.conns.add(conn)
        conn.on_writable = lambda: self._maybe_resume(conn)
        return self

    def on_close(self, conn: "Connection") -> None:
        self.conns.discard(conn)

    def on_frame(self, conn: "Connection", frame: tuple) -> None:
        ftype = frame[0]
        if ftype == FRAME_APPEND:
            self.append(conn, frame[1], frame[2])
        elif ftype == FRAME_READ:
            self.read(conn, frame[1], frame[2], frame[3], frame[4], frame[5])
        elif ftype == FRAME_STATUS:
            self._reply(conn, encode_status_reply(frame[1], json.dumps(self.node.status()).encode()))
        else:
            conn.fail(ERR_BAD_REQUEST, f"unexpected frame type {ftype} from a client")

    def _reply(self, conn: "Connection", frame: bytes) -> None:
        if conn.closed:
            return
        conn.send(frame)
        if conn.write_paused or conn.backlog_bytes > REPLY_BACKLOG_BYTES:
            # The client is not reading its replies (or asked for more than it reads in one
            # go): stop reading its requests until the socket drains (on_writable resumes).
            conn.pause_reading()

    def _maybe_resume(self, conn: "Connection") -> None:
        if not self.backlog:
            conn.resume_reading()

    def _error(self, conn: "Connection", request_id: int, code: int, message: str) -> None:
        leader_id = 0
        address = ""
        if code == ERR_NOT_LEADER:
            leader_id = self.node.leader_id
            address = self.node.address_of(leader_id)
        self._reply(conn, encode_error(request_id, code, leader_id, address, message))

    # -- append -----------------------------------------------------------------------------
    def append(self, conn: "Connection", request_id: int, records: RecordBatch) -> None:
        """Propose `records` (one request) and answer once they are committed, or with an error."""
        if self.stopping:
            self._error(conn, request_id, ERR_SHUTTING_DOWN, "the node is shutting down")
            return
        if len(records) == 0:
            self._error(conn, request_id, ERR_BAD_REQUEST, "an append needs at least one record")
            return
        if records.nbytes > self.max_append_bytes:
            self._error(conn, request_id, ERR_TOO_LARGE,
                        f"{records.nbytes} bytes in one append; the limit is {self.max_append_bytes}")
            return
        if records.kind(0) == KIND_CONF:
            # An admin request (membership, leadership transfer): runtime/membership.py.
            if len(records) != 1:
                self._error(conn, request_id, ERR_BAD_REQUEST, "an admin request is one record")
                return
            self.node.membership.handle(conn, request_id, records, self.request_timeout)
            return
        if records.kind(0) == KIND_SESSION and getattr(self.node, "sessions", None) is not None:
            # Exactly-once append (runtime/sessions.py): a retried request gets its original index.
            self.node.sessions.handle(conn, request_id, records, self.request_timeout)
            return
        deadline = time.monotonic() + self.request_timeout
        if self.backlog:    # keep arrival order behind requests already waiting for budget
            self.backlog.append(_Waiting(conn, request_id, records, deadline))
            return
        node = self.node
        if not node.write_budget_left():
            self._wait_for_budget(_Waiting(conn, request_id, records, deadline))
            return
        # Staged until the node's next Ready pass (flush_staged): every request read in this
        # event-loop turn becomes one proposal, one log segment, one slice per AppendEntries.
        node.note_unwritten(len(records), records.nbytes)
        self.staged.append(_Waiting(conn, request_id, records, deadline))
        node.kick()

    def flush_staged(self) -> None:
        """Propose the requests staged in this turn as one batch (the node calls it before each Ready).

        Proposing a request costs the engine the same whatever its size, so with many small
        requests in flight this per-request work was the leader's largest cost. If the
        engine refuses the whole batch (not leader, over its uncommitted budget, a bad
        record), each request is proposed on its own, in order, so each gets exactly its own
        answer; the first one that must wait for budget waits with all after it, ahead of
        any request that arrived later (those are already in the backlog).
        """
        staged = self.staged
        if not staged:
            return
        self.staged = []
        if len(staged) > 1:
            try:
                first, term = self.node.raw.propose(RecordBatch.concat([w.records for w in staged]))
            except Exception:      # each request meets its own outcome below
                pass
            else:
                for w in staged:
                    n = len(w.records)
                    self._track(_Pending(first + n - 1, term, first, n, w.conn, w.request_id, w.deadline))
                    first += n
                return
        for k, w in enumerate(staged):
            try:
                proposed = self._propose(w.conn, w.request_id, w.records, w.deadline, counted=True)
            except Exception as exc:   # a bug: answer this request and keep the others
                log.exception("node %d: proposing request %d failed", self.node.node_id, w.request_id)
                self._uncount(w.records)
                self._error(w.conn, w.request_id, ERR_INTERNAL, f"internal error: {exc!r}")
                continue
            if not proposed:
                self.backlog.pop()                           # _propose put it at the back
                for rest in staged[k + 1:]:
                    self._uncount(rest.records)
                self.backlog.extendleft(reversed(staged[k:]))
                return

    def _uncount(self, records: RecordBatch) -> None:
        """Take a staged request that was not proposed off the node's write budget again."""
        self.node.note_unwritten(-len(records), -records.nbytes)

    def _wait_for_budget(self, w: _Waiting) -> None:
        """Backlog a request (in arrival order) and stop reading every client until the budget frees up."""
        self.backlog.append(w)
        for c in self.conns:
            c.pause_reading()

    def _propose(self, conn: "Connection", request_id: int, records: RecordBatch, deadline: float,
                 counted: bool = False) -> bool:
        """Hand one request to the engine; False if it must wait for budget (then it is backlogged).

        `counted`: the request is already counted against the write budget (it was staged).
        """
        node = self.node
        try:
            if not counted and not node.write_budget_left():
                raise ProposalDropped("the next transaction is full")
            first, term = node.raw.propose(records)
        except NotLeader:
            if counted:
                self._uncount(records)
            self._error(conn, request_id, ERR_NOT_LEADER, "not the leader")
            return True
        except ValueError as exc:    # e.g. configuration records mixed into data
            if counted:
                self._uncount(records)
            self._error(conn, request_id, ERR_BAD_REQUEST, str(exc))
            return True
        except ProposalDropped:
            if counted:              # counted again when it is retried from the backlog
                self._uncount(records)
            self._wait_for_budget(_Waiting(conn, request_id, records, deadline))
            return False
        self._track(_Pending(first + len(records) - 1, term, first, len(records), conn, request_id, deadline))
        if not counted:      # (a staged request is proposed by the node's Ready pass itself)
            node.note_unwritten(len(records), records.nbytes)
            node.kick()
        return True

    def _track(self, req: _Pending) -> None:
        pend = self.pending
        # A proposal lands at last_index + 1, so anything pending at or above its first
        # index was truncated from this node's log while it followed another leader. That
        # is not yet a verdict: a later leader that still holds those entries could commit
        # them (the figure 8 situation, paper 5.4.2), so they move to `orphans` and are
        # answered when their last index commits (by its term) or when they time out.
        while pend and pend[-1].last >= req.first:
            self.orphans.append(pend.pop())
        pend.append(req)

    def _fail_replaced(self, req: _Pending) -> None:
        self._error(req.conn, req.request_id, ERR_NOT_LEADER, "the entries were replaced by another leader; retry")

    def on_committed(self, first: int, batch: RecordBatch) -> None:
        """Answer every pending request whose last index is in the committed `batch` at `first`.

        PRECONDITION: called for every committed batch, in index order.
        """
        hi = first + len(batch) - 1
        membership = getattr(self.node, "membership", None)   # absent on test doubles
        if membership is not None:
            membership.on_committed(first, batch)
        sessions = getattr(self.node, "sessions", None)
        if sessions is not None:
            sessions.on_committed(first, batch)
        pend = self.pending
        while pend and pend[0].last <= hi:
            self._settle(pend.popleft(), first, batch)
        if self.orphans:
            keep = []
            for req in self.orphans:
                if req.last <= hi:
                    self._settle(req, first, batch)
                else:
                    keep.append(req)
            self.orphans = keep

    def _settle(self, req: _Pending, first: int, batch: RecordBatch) -> None:
        """Answer `req` now that its last index is committed: same term = appended, else replaced."""
        if req.last < first:
            # Not reachable when batches come in order; answer rather than hang.
            self._error(req.conn, req.request_id, ERR_TIMEOUT, "outcome unknown")
        elif batch.term(req.last - first) == req.term:
            self._reply(req.conn, encode_appended(req.request_id, req.first, req.count))
        else:
            self._fail_replaced(req)

    def after_apply(self) -> None:
        """Retry proposals that waited for budget (after an apply or a fresh write budget); resume reading once none wait."""
        self.flush_staged()      # staged requests arrived before any now in the backlog
        while self.backlog:
            w = self.backlog[0]
            if w.conn.closed:
                self.backlog.popleft()
                continue
            if time.monotonic() > w.deadline:
                self.backlog.popleft()
                self._error(w.conn, w.request_id, ERR_TIMEOUT, "not proposed in time")
                continue
            self.backlog.popleft()
            if not self._propose(w.conn, w.request_id, w.records, w.deadline):
                # _propose put it at the back; it was the head: move it back to the front.
                self.backlog.appendleft(self.backlog.pop())
                return
        for c in self.conns:
            if not c.write_paused:
                c.resume_reading()
        membership = getattr(self.node, "membership", None)
        if membership is not None:
            membership.poll()
        reads = getattr(self.node, "reads", None)
        if reads is not None:
            reads.serve()
        sessions = getattr(self.node, "sessions", None)
        if sessions is not None:
            sessions.poll()

    def expire(self, now: float) -> None:
        """Answer timeout to pending requests past their deadline (their outcome is unknown)."""
        pend = self.pending
        while pend and pend[0].deadline < now:
            req = pend.popleft()
            self._error(req.conn, req.request_id, ERR_TIMEOUT, "not committed in time; the outcome is unknown")
        if self.orphans:
            for req in [r for r in self.orphans if r.deadline < now]:
                self._error(req.conn, req.request_id, ERR_TIMEOUT, "not committed in time; the outcome is unknown")
            self.orphans = [r for r in self.orphans if r.deadline >= now]
        if self.backlog:
            self.after_apply()

    # -- read -------------------------------------------------------------------------------
    def read(self, conn: "Connection", request_id: int, start: int, max_entries: int, max_bytes: int,
             consistency: int = READ_STALE) -> None:
        """Committed data entries from `start`: up to max_entries (0 = default) and max_bytes (0 = default).

        A linearizable or lease read (runtime/reads.py) is answered here later, once its read
        index is confirmed and applied.
        """
        if consistency != READ_STALE:
            self.node.reads.request(conn, request_id, start, max_entries, max_bytes, consistency)
            return
        max_entries = min(max_entries or DEFAULT_READ_ENTRIES, MAX_READ_ENTRIES)
        max_bytes = min(max_bytes or DEFAULT_READ_BYTES, MAX_READ_BYTES)
        storage = self.node.storage
        start = max(start, 1, storage.first_index())
        hi = min(self.node.applied_index, start + max_entries - 1)   # inclusive
        if start > hi:
            self._reply(conn, encode_entries(request_id, start, (), b""))
            return
        try:
            batch = storage.records(start, hi + 1, max_bytes)
        except CorruptLogError as exc:
            # Never served: the reader gets an error naming the index, status shows it, and
            # the operator repairs the stopped node from the cluster (`raftlog repair`).
            if getattr(self.node, "corrupt_index", None) is None:
                log.error("node %d: %s; not serving it (stop the node and run `raftlog repair DIR --peers ...`)",
                          self.node.node_id, exc)
            self.node.corrupt_index = exc.index
            self._error(conn, request_id, ERR_INTERNAL, str(exc))
            return
        except IndexError:   # compacted under us: the client retries from first_index
            self._reply(conn, encode_entries(request_id, storage.first_index(), (), b""))
            return
        n = len(batch)
        keep = [i for i in range(n) if batch.kind(i) == KIND_DATA]
        if len(keep) == n:
            records: RecordBatch | bytes = batch
        else:
            records = b"".join([batch.record(i) for i in keep])
        self._reply(conn, encode_entries(request_id, start + n, [start + i for i in keep], records))

    # -- shutdown ---------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Answer everything pending with shutting-down and close client connections."""
        self.stopping = True
        self.pending.extend(self.orphans)
        self.orphans = []
        while self.pending:
            req = self.pending.popleft()
            self._error(req.conn, req.request_id, ERR_SHUTTING_DOWN, "the node is shutting down; the outcome is unknown")
        self.backlog.extendleft(reversed(self.staged))     # read but never proposed: not appended
        self.staged = []
        while self.backlog:
            w = self.backlog.popleft()
            self._error(w.conn, w.request_id, ERR_SHUTTING_DOWN, "the node is shutting down")
        for conn in list(self.conns):
            conn.close()
