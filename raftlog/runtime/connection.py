"""One framed connection: decodes incoming frames, coalesces and bounds outgoing ones.

Every connection, peer or client, runs the same `Connection` protocol: bytes go through the
sans-I/O FrameDecoder, frames written in one event-loop turn are coalesced into one socket
write, and the kernel's backpressure (pause_writing/resume_writing) is honoured. What differs
is the `Handler` a connection is given after its handshake:

- runtime/peer_transport.py owns the Raft traffic; its sends are droppable, so each peer's
  outgoing queue stays bounded in bytes (Raft resends what a follower did not acknowledge).
- The client service (runtime/server.py) gets the client connections the listener admits
  (runtime/listener.py); replies there are never dropped: when a client's socket backs up, its
  connection stops reading requests (`pause_reading`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable, Optional, Protocol

from raftlog.errors import FrameError
from raftlog.hot import (
    DEFAULT_MAX_FRAME,
    ERR_BAD_REQUEST,
    ERR_TOO_LARGE,
    ROLE_PEER,
    FrameDecoder,
    encode_error,
)

log = logging.getLogger("raftlog.transport")

PEER_QUEUE_BYTES = 8 << 20     # per-peer bound on bytes waiting to be written
# The decoder only ever buffers one unfinished frame, so bounding that buffer per role bounds a
# connection's input memory (a hostile or broken sender cannot cost more). Until its handshake
# a connection gets this; the listener raises it for clients and the peer transport for peers
# (members, past the handshake, may send up to max_frame).
HANDSHAKE_MAX_BYTES = 1 << 17          # unfinished input of a connection that has not said who it is


class Handler(Protocol):
    """What a connection hands its decoded frames to once it knows who is on the other end."""

    def on_frame(self, conn: "Connection", frame: tuple) -> None:
        """One decoded frame (a tuple whose first item is its FRAME_* type)."""

    def on_close(self, conn: "Connection") -> None:
        """The connection is gone (closed by either side or failed)."""


class Connection(asyncio.Protocol):
    """One framed TCP connection: decodes incoming frames, coalesces and bounds outgoing ones.

    `send(frame)` never blocks. Frames queued in one event-loop turn leave in one write.
    While the kernel buffer is full (pause_writing) frames wait in `_out`; `droppable` sends
    are refused once `_out` holds more than `max_queue_bytes`, other sends are always kept
    and the caller is expected to stop producing (see `pause_reading`).
    """

    def __init__(self, handler: Handler, *, max_frame: int = DEFAULT_MAX_FRAME,
                 max_queue_bytes: int = PEER_QUEUE_BYTES, on_writable: Optional[Callable[[], None]] = None) -> None:
        self.handler = handler
        self.decoder = FrameDecoder(max_frame)
        self.max_queue_bytes = max_queue_bytes
        self.transport: Optional[asyncio.Transport] = None
        self.remote = "?"
        self.closed = False
        self.peer_id = 0             # the other side's node id after a peer handshake
        self.role = 0                # ROLE_PEER / ROLE_CLIENT after the handshake
        self.dropped = 0             # droppable frames refused because the queue was full
        self.on_fail: Optional[Callable[[int], None]] = None   # told the code of a fail() (metrics)
        self.on_writable = on_writable
        self.max_buffer = HANDSHAKE_MAX_BYTES   # raised by the role's limit after the handshake
        self.last_frame = self.last_sent = time.monotonic()
        self._held: deque[tuple] = deque()       # decoded frames waiting while reading is paused
        self._read_paused = False
        self._drain_scheduled = False
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self._write_paused = False
        self._closed_waiter: asyncio.Future = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.remote = f"{peer[0]}:{peer[1]}"

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            frames = self.decoder.feed(data)
        except FrameError as exc:
            self.fail(ERR_BAD_REQUEST, f"bad frame: {exc}")
            return
        if frames:
            self.last_frame = time.monotonic()
            self._dispatch(frames)
        # Checked after the frames are handled: a handshake among them may raise the limit
        # (a peer's first AppendEntries often shares a segment with its handshake).
        if not self.closed and self.decoder.buffered > self.max_buffer:
            self.fail(ERR_TOO_LARGE, f"{self.decoder.buffered} bytes of one unfinished frame; "
                                     f"the limit here is {self.max_buffer}")

    def _dispatch(self, frames: list) -> None:
        if self._held or self._read_paused:
            self._held.extend(frames)
            return
        for k, frame in enumerate(frames):
            if self.closed:
                return
            if self._read_paused:
                # One socket read can hold many pipelined requests; the ones after a pause
                # wait here, so backpressure is per frame, not per read (a 64 KiB read of
                # small Read requests could otherwise queue gigabytes of replies).
                self._held.extend(frames[k:])
                return
            self.handler.on_frame(self, frame)

    def eof_received(self) -> Optional[bool]:
        return False  # close our side too

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self._out.clear()
        self._out_bytes = 0
        if not self._closed_waiter.done():
            self._closed_waiter.set_result(None)
        handler, self.handler = self.handler, _NULL_HANDLER   # on_close runs once
        handler.on_close(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._out:
            self._flush()
        if self.on_writable is not None:
            self.on_writable()

    # -- sending ----------------------------------------------------------------------------
    @property
    def backlog_bytes(self) -> int:
        """Bytes waiting in this connection: ours plus the transport's buffer."""
        buffered = self.transport.get_write_buffer_size() if self.transport is not None else 0
        return self._out_bytes + buffered

    @property
    def write_paused(self) -> bool:
        """True while the kernel buffer is full and writes wait in user space."""
        return self._write_paused

    def send(self, frame: bytes, droppable: bool = False) -> bool:
        """Queue `frame` for the next coalesced write; False if it was dropped (droppable and over the bound)."""
        if self.closed:
            return False
        if droppable and self._out_bytes + len(frame) > self.max_queue_bytes and self._out:
            self.dropped += 1
            return False
        self._out.append(frame)
        self._out_bytes += len(frame)
        if not self._flush_scheduled and not self._write_paused:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return True

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or self._write_paused or not self._out or self.transport is None:
            return
        out = self._out
        self._out = []
        self._out_bytes = 0
        self.last_sent = time.monotonic()
        # One write per turn: the transport either sends it at once or buffers it whole;
        # joining first keeps small Raft frames from costing one syscall each.
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self._read_paused and not self._write_paused and self.on_writable is not None:
            # Reading was paused for what sat in `_out`, and the kernel took it without the
            # transport pausing: no resume_writing will come, so say "writable" now.
            self.on_writable()

    def pause_reading(self) -> None:
        """Stop reading requests (backpressure towards the sender); frames already read wait in order."""
        self._read_paused = True
        if self.transport is not None and not self.closed and self.transport.is_reading():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Undo pause_reading: frames held meanwhile are handled first (in a later turn), then the socket is read."""
        if self.closed:
            return
        self._read_paused = False
        if self._held:
            if not self._drain_scheduled:
                self._drain_scheduled = True
                asyncio.get_running_loop().call_soon(self._drain_held)
            return
        if self.transport is not None and not self.transport.is_reading():
            self.transport.resume_reading()

    def _drain_held(self) -> None:
        self._drain_scheduled = False
        while self._held and not self._read_paused and not self.closed:
            self.handler.on_frame(self, self._held.popleft())
        if not self._held and not self._read_paused and not self.closed:
            self.resume_reading()

    # -- closing ----------------------------------------------------------------------------
    def fail(self, code: int, message: str, request_id: int = 0, *, level: int = logging.WARNING) -> None:
        """Log one line, send an error frame if the socket still takes it, and close."""
        if self.closed:
            return
        if self.on_fail is not None:
            self.on_fail(code)
        who = f"peer {self.peer_id}" if self.role == ROLE_PEER and self.peer_id else "connection"
        log.log(level, "%s from %s: %s; closing it", who, self.remote, message)
        try:
            self._flush()
            if self.transport is not None:
                self.transport.write(encode_error(request_id, code, 0, "", message[:1000]))
        except Exception:  # the socket may be gone already; the close below is what matters
            pass
        self.close()

    def close(self) -> None:
        """Close after flushing what is queued (idempotent)."""
        if self.closed:
            return
        self._flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        handler, self.handler = self.handler, _NULL_HANDLER
        handler.on_close(self)

    def abort(self) -> None:
        """Close at once, discarding what is queued."""
        if self.transport is not None:
            self.transport.abort()
        self.close()

    def abandon(self) -> None:
        """Close at once, discarding what is queued, without telling the handler (its owner has a newer connection)."""
        self.handler = _NULL_HANDLER
        self.abort()

    async def wait_closed(self) -> None:
        """Return once the connection is lost."""
        await asyncio.shield(self._closed_waiter)


class _NullHandler:
    """The handler of a closed or abandoned connection: ignores whatever still arrives."""

    def on_frame(self, conn: Connection, frame: tuple) -> None:
        pass

    def on_close(self, conn: Connection) -> None:
        pass


_NULL_HANDLER = _NullHandler()
