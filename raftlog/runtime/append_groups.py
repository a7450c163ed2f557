"""The plain Appends one client connection sends in one event-loop turn, as one request of the propose path.

A client that keeps many small Appends in flight sends them back to back; the node reads
them in one socket read. Handled one by one, each cost the leader its own waiting record,
pending record, waiter, settle, reply encoding and send: with one entry per request, that
per-request work was the leader's largest cost. Here the Appends of one connection that
arrive before the next Ready pass join one `AppendGroup`, an open request of
runtime/proposals.py (`Proposals.submit_open`): sealed and proposed as one batch, tracked as
one `(first, count, term)`, and answered by one `encode_appended_run` call and one send. Each
Append still meets exactly its own outcome: its records lie at their own offset in the
group's range, and an error is told to every member by its own request id.

Order: a group only takes Appends that arrived after every request of its connection already
proposed or staged; a connection's non-plain request (session, admin) closes the group first
(`AppendGroups.close`), so plain Appends that follow it start a new group behind it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from raftlog.hot import ERR_NOT_LEADER, ERR_TIMEOUT, RecordBatch, encode_appended, encode_appended_run

if TYPE_CHECKING:
    from raftlog.runtime.connection import Connection
    from raftlog.runtime.port import NodePort
    from raftlog.runtime.proposals import Proposals

# A group (of a connection's Appends here, of an embedded log's appends in embed.py) stops
# taking appends at this size (the next one opens another group): what one
# request may hold while it waits for the write budget. Groups staged in one turn are
# proposed together anyway (Proposals.flush), so the cap costs nothing.
GROUP_ENTRIES = 1024
GROUP_BYTES = 1 << 20


class AppendGroup:
    """Plain Appends of one connection, proposed as one request; each answered at its own offset (an OpenRequest)."""

    __slots__ = ("owner", "conn", "request_ids", "counts", "batches", "entries", "nbytes", "first", "term")

    def __init__(self, owner: "AppendGroups", conn: "Connection") -> None:
        self.owner = owner
        self.conn = conn
        self.request_ids: list[int] = []
        self.counts: list[int] = []
        self.batches: list[RecordBatch] = []
        self.entries = 0
        self.nbytes = 0
        self.first = 0               # where and in which term it was proposed (0: not yet)
        self.term = 0

    def add(self, request_id: int, records: RecordBatch) -> None:
        """Append request `request_id` (its records follow the group's previous ones)."""
        n = len(records)
        self.request_ids.append(request_id)
        self.counts.append(n)
        self.batches.append(records)
        self.entries += n
        self.nbytes += records.nbytes

    @property
    def full(self) -> bool:
        """True once the group holds GROUP_ENTRIES or GROUP_BYTES: the next Append opens another."""
        return self.entries >= GROUP_ENTRIES or self.nbytes >= GROUP_BYTES

    def seal(self) -> RecordBatch:
        """Every member's records in order, final: later Appends of the connection open another group."""
        self.owner.close(self.conn, self)
        return RecordBatch.concat(self.batches)

    @property
    def gone(self) -> bool:
        """True once the client's connection closed (nobody reads the answers)."""
        return self.conn.closed

    @property
    def requests(self) -> int:
        """The Appends it answers."""
        return len(self.request_ids)

    def proposed(self, first: int, term: int) -> None:
        """Remember where the group went (nothing to tell the client before its entries commit)."""
        self.first = first
        self.term = term

    def appended(self, first: int, count: int) -> None:
        """Answer every member Appended at its own offset from `first`, in one frame run and one send."""
        self.owner.port.reply(self.conn, encode_appended_run(self.request_ids, self.counts, first))

    def failed(self, code: int, message: str) -> None:
        """Answer every member the error (the group was refused, or timed out, as a whole); it takes no more.

        ERR_NOT_LEADER after the group was proposed means another leader's entry took its
        last index. Members before that point may still be committed as proposed (a leader
        that replicated only part of the group, and its successor kept that part): each
        member is answered by its own last index (see _settle_each).
        """
        self.owner.close(self.conn, self)
        if code == ERR_NOT_LEADER and self.term:
            self._settle_each(message)
            return
        port, conn = self.owner.port, self.conn
        for request_id in self.request_ids:
            port.error(conn, request_id, code, message)

    def _settle_each(self, message: str) -> None:
        """Answer each member by its last index: committed there in the group's term = appended, else replaced.

        The entry at an index with the group's term is the group's own (a leader appends
        at an index once in its term), and the whole member precedes it (Log Matching, Raft
        paper 5.3). A member whose last entry is no longer in the log (compacted) has an
        unknown outcome.
        """
        port, conn = self.owner.port, self.conn
        raw = port.raw
        log = raw.raft.log
        committed = raw.commit_index
        index = self.first
        for request_id, n in zip(self.request_ids, self.counts):
            last = index + n - 1
            if last > committed:
                port.error(conn, request_id, ERR_NOT_LEADER, message)
            elif last < log.first_index:
                port.error(conn, request_id, ERR_TIMEOUT, "the outcome is unknown (its entries were compacted)")
            elif log.term_at(last) == self.term:
                port.reply(conn, encode_appended(request_id, index, n))
            else:
                port.error(conn, request_id, ERR_NOT_LEADER, message)
            index += n


class AppendGroups:
    """The open AppendGroup of each client connection (at most one), submitted to proposals when opened."""

    def __init__(self, port: "NodePort", proposals: "Proposals") -> None:
        self.port = port
        self.proposals = proposals
        self.open: dict["Connection", AppendGroup] = {}

    def add(self, conn: "Connection", request_id: int, records: RecordBatch, deadline: float) -> None:
        """One plain Append from `conn`: joins the connection's open group, or opens (and submits) one.

        `deadline` counts for a new group: the members that join it later in the same turn
        share its first member's deadline.
        """
        group = self.open.get(conn)
        if group is None:
            group = self.open[conn] = AppendGroup(self, conn)
            group.add(request_id, records)
            if group.full:
                del self.open[conn]
            self.proposals.submit_open(group, deadline)
            return
        group.add(request_id, records)
        if group.full:
            del self.open[conn]

    def close(self, conn: "Connection", group: Optional[AppendGroup] = None) -> None:
        """`conn`'s open group (or only `group`, if it is the open one) takes no more Appends."""
        if group is None or self.open.get(conn) is group:
            self.open.pop(conn, None)
