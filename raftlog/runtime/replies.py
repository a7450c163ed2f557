"""Answers to client requests: the reply with backpressure, and the Waiter that turns an outcome into a frame.

Every service of a node answers its clients through these, via the node (NodePort.reply and
NodePort.error), so a client that stops reading its replies is treated the same everywhere.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from raftlog.hot import encode_appended

if TYPE_CHECKING:
    from raftlog.runtime.connection import Connection
    from raftlog.runtime.port import NodePort

MAX_READ_BYTES = 16 << 20                  # the largest Entries reply one Read may ask for
REPLY_BACKLOG_BYTES = 2 * MAX_READ_BYTES   # replies queued for one client before its requests wait


def send_reply(conn: "Connection", frame: bytes) -> None:
    """Queue `frame` to a client; stop reading its requests while it does not read its replies."""
    if conn.closed:
        return
    conn.send(frame)
    if conn.write_paused or conn.backlog_bytes > REPLY_BACKLOG_BYTES:
        # The client is not reading its replies (or asked for more than it reads in one
        # go): stop reading its requests until the socket drains (on_writable resumes).
        conn.pause_reading()


class ClientWaiter:
    """The outcome of one client Append, answered on its connection (a proposals.Waiter)."""

    __slots__ = ("conn", "request_id", "port")

    def __init__(self, port: "NodePort", conn: "Connection", request_id: int) -> None:
        self.port = port
        self.conn = conn
        self.request_id = request_id

    @property
    def gone(self) -> bool:
        """True once the client's connection closed."""
        return self.conn.closed

    requests = 1            # one client request

    def proposed(self, first: int, term: int) -> None:
        """Nothing to tell the client before its entries commit."""

    def appended(self, first: int, count: int) -> None:
        """Answer Appended(first, count)."""
        self.port.reply(self.conn, encode_appended(self.request_id, first, count))

    def failed(self, code: int, message: str) -> None:
        """Answer the error."""
        self.port.error(self.conn, self.request_id, code, message)
