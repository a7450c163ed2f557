"""The one path by which entries enter the engine on a running node: client Appends and embedded appends alike.

A request is a RecordBatch and a Waiter. Requests submitted in one event-loop turn are
staged and proposed together at the node's next Ready pass (`flush`): one engine proposal,
one log segment, one slice per AppendEntries, whatever the number of requests. Each request
is then tracked as `(first, count, term)`, never per entry, and answered once the batch that
holds its last index is committed and locally durable: the same term there means the whole
request is in the log (Log Matching, Raft paper 5.3); another term means a new leader
replaced it, and the waiter is told to retry (not-leader).

Backpressure: when the node's write budget is spent or the engine refuses a proposal over
its uncommitted budget, requests wait in arrival order (`backlog`) and are retried after
every apply and every fresh write budget; `on_backlog(True)` tells the client service to
stop reading its connections, and `on_backlog(False)` (after every retry that leaves no
request waiting) that it may read them again.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable, NamedTuple, Optional, Protocol

from raftlog.errors import NotLeader, ProposalDropped
from raftlog.hot import ERR_BAD_REQUEST, ERR_INTERNAL, ERR_NOT_LEADER, ERR_SHUTTING_DOWN, ERR_TIMEOUT, RecordBatch
from raftlog.runtime.port import NodePort
from raftlog.runtime.stats import NodeStats

log = logging.getLogger("raftlog.proposals")


class Waiter(Protocol):
    """Who is told the outcome of one request: exactly one of `appended` or `failed`, at most once."""

    @property
    def gone(self) -> bool:
        """True when nobody listens any more (a closed connection): the request is dropped silently."""

    @property
    def requests(self) -> int:
        """How many client requests this answers (1; a group of appends: its members), for the metrics."""

    def proposed(self, first: int, term: int) -> None:
        """The request's records are in the engine's log from `first`, in `term` (not yet committed)."""

    def appended(self, first: int, count: int) -> None:
        """The request's `count` records are committed and durable at `[first, first + count)`."""

    def failed(self, code: int, message: str) -> None:
        """The request failed with an ERR_* code (ERR_NOT_LEADER: retry at the leader)."""


class OpenRequest(Waiter, Protocol):
    """A request whose records are gathered until it is proposed (the embedded appends of one turn)."""

    def seal(self) -> RecordBatch:
        """The request's records (at least one), final: nothing joins the request afterwards."""


class _Pending(NamedTuple):
    last: int          # index of the request's last record
    term: int          # the term it was proposed in
    first: int
    count: int
    waiter: Waiter
    deadline: float


class _Waiting(NamedTuple):
    records: Optional[RecordBatch]     # None: an OpenRequest (the waiter), sealed when proposed
    waiter: Waiter
    deadline: float


class Proposals:
    """Stages, proposes and tracks one node's requests; the node calls flush, on_committed, retry and expire."""

    def __init__(self, port: NodePort, on_backlog: Callable[[bool], None] = lambda waiting: None) -> None:
        self.port = port
        self.on_backlog = on_backlog
        self.pending: deque[_Pending] = deque()     # sorted by `last` (see track)
        self.orphans: list[_Pending] = []           # overtaken by newer proposals, or watched (rare)
        self.backlog: deque[_Waiting] = deque()     # refused by the budget, in arrival order
        self.staged: list[_Waiting] = []            # submitted this turn, proposed together by flush
        self.stopping = False
        self.stats: Optional[NodeStats] = None       # set by a node that serves metrics

    def __len__(self) -> int:
        """Requests proposed and not yet answered."""
        return len(self.pending) + len(self.orphans)

    def _fail(self, waiter: Waiter, code: int, message: str) -> None:
        """Answer `waiter` with error `code` (and count it for the metrics)."""
        if self.stats is not None:
            self.stats.request_failed(code, waiter.requests)
        waiter.failed(code, message)

    # -- entering -------------------------------------------------------------------------
    def submit(self, records: RecordBatch, deadline: float, waiter: Waiter) -> None:
        """Propose `records` (one request, at least one record) at the next flush; `waiter` hears the outcome."""
        if self.stopping:
            self._fail(waiter, ERR_SHUTTING_DOWN, "the node is shutting down")
            return
        w = _Waiting(records, waiter, deadline)
        if self.backlog:    # keep arrival order behind requests already waiting for budget
            self.backlog.append(w)
            return
        port = self.port
        if not port.write_budget_left():
            self._wait_for_budget(w)
            return
        port.note_unwritten(len(records), records.nbytes)
        self.staged.append(w)
        port.kick()

    def submit_open(self, request: OpenRequest, deadline: float) -> None:
        """Like submit, for a request that keeps taking records until the next flush proposes it (`request.seal()`).

        It counts against the write budget once sealed; while it waits for budget in the
        backlog it stays open, so it must bound its own size.
        """
        if self.stopping:
            self._fail(request, ERR_SHUTTING_DOWN, "the node is shutting down")
            return
        w = _Waiting(None, request, deadline)
        if self.backlog or not self.port.write_budget_left():
            self._wait_for_budget(w)
            return
        self.staged.append(w)
        self.port.kick()

    def _seal(self, w: _Waiting) -> Optional[_Waiting]:
        """Open request `w` with its records: sealed now and counted against the write budget.

        None when sealing failed (the request was answered with the error).
        """
        try:
            records = w.waiter.seal()      # type: ignore[attr-defined]
        except Exception as exc:          # e.g. a payload too large for one record
            self._fail(w.waiter, ERR_BAD_REQUEST, f"cannot encode the request: {exc}")
            return None
        self.port.note_unwritten(len(records), records.nbytes)
        return _Waiting(records, w.waiter, w.deadline)

    def propose_now(self, records: RecordBatch) -> tuple[int, int]:
        """Propose `records` at once, after everything staged; `(first index, term)`.

        NotLeader, ProposalDropped (the write budget or the engine's uncommitted budget is
        spent: retry later) or ValueError, with nothing proposed. The caller tracks it.
        """
        self.flush()
        port = self.port
        if not port.write_budget_left():
            raise ProposalDropped("the next transaction is full")
        first, term = port.raw.propose(records)
        port.note_unwritten(len(records), records.nbytes)
        port.kick()
        return first, term

    def flush(self) -> None:
        """Propose the requests staged in this turn as one batch (the node calls it before each Ready).

        Proposing costs the engine the same whatever the batch's size, so with many small
        requests in flight this per-request work was the leader's largest cost. If the
        engine refuses the whole batch (not leader, over its uncommitted budget, a bad
        record), each request is proposed on its own, in order, so each meets exactly its
        own outcome; the first one that must wait for budget waits with all after it, ahead
        of any request that arrived later (those are already in the backlog).
        """
        staged = self.staged
        if not staged:
            return
        self.staged = []
        sealed: list[_Waiting] = []          # (every staged request is counted from here on)
        for w in staged:
            if w.records is None:
                w = self._seal(w)
                if w is None:
                    continue
            sealed.append(w)
        staged = sealed
        if len(staged) > 1:
            try:
                first, term = self.port.raw.propose(RecordBatch.concat([w.records for w in staged]))
            except Exception:      # each request meets its own outcome below
                pass
            else:
                for w in staged:
                    n = len(w.records)
                    w.waiter.proposed(first, term)
                    self.track(first, n, term, w.deadline, w.waiter)
                    first += n
                return
        for k, w in enumerate(staged):
            try:
                proposed = self._propose(w, counted=True)
            except Exception as exc:   # a bug: answer this request and keep the others
                log.exception("node %d: proposing a request failed", self.port.node_id)
                self._uncount(w.records)
                self._fail(w.waiter, ERR_INTERNAL, f"internal error: {exc!r}")
                continue
            if not proposed:
                self.backlog.pop()                           # _propose put it at the back
                for rest in staged[k + 1:]:
                    self._uncount(rest.records)
                self.backlog.extendleft(reversed(staged[k:]))
                return

    def _uncount(self, records: RecordBatch) -> None:
        """Take a staged request that was not proposed off the node's write budget again."""
        self.port.note_unwritten(-len(records), -records.nbytes)

    def _wait_for_budget(self, w: _Waiting) -> None:
        """Backlog a request (in arrival order); the first one waiting stops the client connections' reading."""
        was_empty = not self.backlog
        self.backlog.append(w)
        if was_empty:
            self.on_backlog(True)

    def _propose(self, w: _Waiting, counted: bool = False) -> bool:
        """Hand one request to the engine; False if it must wait for budget (then it is backlogged).

        `counted`: the request is already counted against the write budget (it was staged).
        """
        port = self.port
        staged = counted
        if not counted:
            if not port.write_budget_left():
                self._wait_for_budget(w)
                return False
            if w.records is None:         # an open request from the backlog: sealed now that it has budget
                sealed = self._seal(w)
                if sealed is None:
                    return True
                w, counted = sealed, True
        records = w.records
        assert records is not None
        try:
            first, term = port.raw.propose(records)
        except NotLeader:
            if counted:
                self._uncount(records)
            self._fail(w.waiter, ERR_NOT_LEADER, "not the leader")
            return True
        except ValueError as exc:    # e.g. configuration records mixed into data
            if counted:
                self._uncount(records)
            self._fail(w.waiter, ERR_BAD_REQUEST, str(exc))
            return True
        except ProposalDropped:
            if counted:              # counted again when it is retried from the backlog
                self._uncount(records)
            self._wait_for_budget(w)
            return False
        w.waiter.proposed(first, term)
        self.track(first, len(records), term, w.deadline, w.waiter)
        if not staged:       # (a staged request is proposed by the node's Ready pass itself)
            if not counted:
                port.note_unwritten(len(records), records.nbytes)
            port.kick()
        return True

    # -- tracking -------------------------------------------------------------------------
    def track(self, first: int, count: int, term: int, deadline: float, waiter: Waiter) -> None:
        """Answer `waiter` when `[first, first + count)`, just proposed in `term`, commits (or is replaced)."""
        pend = self.pending
        # A proposal lands at last_index + 1, so anything pending at or above its first
        # index was truncated from this node's log while it followed another leader. That
        # is not yet a verdict: a later leader that still holds those entries could commit
        # them (the figure 8 situation, paper 5.4.2), so they move to `orphans` and are
        # answered when their last index commits (by its term) or when they time out.
        while pend and pend[-1].last >= first:
            self.orphans.append(pend.pop())
        pend.append(_Pending(first + count - 1, term, first, count, waiter, deadline))

    def watch(self, first: int, count: int, term: int, deadline: float, waiter: Waiter) -> None:
        """Answer `waiter` when `[first, first + count)`, proposed earlier in `term`, commits (or is replaced)."""
        self.orphans.append(_Pending(first + count - 1, term, first, count, waiter, deadline))

    def on_committed(self, first: int, batch: RecordBatch) -> None:
        """Answer every request whose last index is in the committed `batch` at `first`.

        PRECONDITION: called for every committed batch, in index order.
        """
        hi = first + len(batch) - 1
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
        if req.waiter.gone:
            return
        if req.last < first:
            # Not reachable when batches come in order; answer rather than hang.
            self._fail(req.waiter, ERR_TIMEOUT, "outcome unknown")
        elif batch.term(req.last - first) == req.term:
            req.waiter.appended(req.first, req.count)
            if self.stats is not None:
                self.stats.request_appended(req.deadline, req.count, req.waiter.requests)
        else:
            self._fail(req.waiter, ERR_NOT_LEADER, "the entries were replaced by another leader; retry")

    # -- retries, deadlines, shutdown -------------------------------------------------------
    def retry(self) -> None:
        """Propose what waited for budget (after an apply or a fresh write budget); `on_backlog(False)`
        once none waits."""
        self.flush()      # staged requests arrived before any now in the backlog
        backlog = self.backlog
        while backlog:
            w = backlog[0]
            if w.waiter.gone:
                backlog.popleft()
                continue
            if time.monotonic() > w.deadline:
                backlog.popleft()
                self._fail(w.waiter, ERR_TIMEOUT, "not proposed in time")
                continue
            backlog.popleft()
            if not self._propose(w):
                # _propose put it at the back; it was the head: move it back to the front.
                backlog.appendleft(backlog.pop())
                return
        self.on_backlog(False)

    def expire(self, now: float) -> None:
        """Answer timeout to requests past their deadline (their outcome is unknown)."""
        pend = self.pending
        while pend and pend[0].deadline < now:
            req = pend.popleft()
            self._fail(req.waiter, ERR_TIMEOUT, "not committed in time; the outcome is unknown")
        if self.orphans:
            for req in [r for r in self.orphans if r.deadline < now]:
                self._fail(req.waiter, ERR_TIMEOUT, "not committed in time; the outcome is unknown")
            self.orphans = [r for r in self.orphans if r.deadline >= now]
        if self.backlog:
            self.retry()

    def shutdown(self) -> None:
        """Answer everything proposed or waiting with shutting-down; nothing is accepted afterwards."""
        self.stopping = True
        self.pending.extend(self.orphans)
        self.orphans = []
        while self.pending:
            req = self.pending.popleft()
            self._fail(req.waiter, ERR_SHUTTING_DOWN, "the node is shutting down; the outcome is unknown")
        self.backlog.extendleft(reversed(self.staged))     # submitted but never proposed: not appended
        self.staged = []
        while self.backlog:
            w = self.backlog.popleft()
            self._fail(w.waiter, ERR_SHUTTING_DOWN, "the node is shutting down")
