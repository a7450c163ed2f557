"""asyncio TCP transport: framing, the handshake, one connection per peer pair, reconnect, bounded queues.

Every connection, peer or client, runs the same `Connection` protocol: bytes go through the
sans-I/O FrameDecoder, frames written in one event-loop turn are coalesced into one socket
write, and the kernel's backpressure (pause_writing/resume_writing) is honoured. What differs
is the handler a connection is given after its handshake:

- `PeerTransport` owns the Raft traffic. Exactly one connection links each pair of nodes: the
  node with the lower id dials, the higher id accepts, and both send over it. A dialer
  reconnects with capped exponential backoff and jitter. Each peer's outgoing queue is
  bounded in bytes; what does not fit is dropped, because Raft resends whatever a follower
  did not acknowledge (a dead or stopped peer therefore costs a bounded amount of memory).
- The client service (runtime/server.py) gets ROLE_CLIENT connections; replies there are
  never dropped: when a client's socket backs up, its connection stops reading requests.

Handshake (DESIGN.md section 5): the connecting side sends `encode_handshake(...)` first; the
accepting side checks magic, version and cluster id (and, for a peer, that the id is a member)
and answers with its own handshake, or with an error frame and a close.
"""
from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import deque
from typing import Callable, Optional, Protocol

from raftlog.core.messages import Message
from raftlog.errors import FrameError
from raftlog.hot import (
    DEFAULT_MAX_FRAME,
    ERR_BAD_REQUEST,
    ERR_CLUSTER_MISMATCH,
    ERR_TIMEOUT,
    ERR_TOO_LARGE,
    ERR_VERSION,
    FRAME_ERROR,
    FRAME_HANDSHAKE,
    FRAME_RAFT,
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    ROLE_PEER,
    FrameDecoder,
    encode_error,
    encode_handshake,
    encode_raft,
)
from raftlog.runtime.auth import AcceptorAuth, AuthError, ConnectorAuth
from raftlog.runtime.peers import parse_address
from raftlog.runtime.tls import TlsFiles, describe

log = logging.getLogger("raftlog.transport")

HANDSHAKE_TIMEOUT = 5.0        # seconds a new connection may take to say who it is
PEER_QUEUE_BYTES = 8 << 20     # per-peer bound on bytes waiting to be written
BACKOFF_BASE = 0.05            # first reconnect delay, seconds
BACKOFF_CAP = 2.0              # largest reconnect delay, seconds
CONNECT_TIMEOUT = 2.0
# Limits that keep a hostile or broken sender from costing unbounded memory or sockets. The
# decoder only ever buffers one unfinished frame, so bounding that buffer per role bounds a
# connection's input memory; peers (members, past the handshake) may send up to max_frame.
HANDSHAKE_MAX_BYTES = 1 << 17          # unfinished input of a connection that has not said who it is
CLIENT_MAX_BUFFER = (4 << 20) + (1 << 20)   # a client's unfinished frame: the largest append plus slack
MAX_CONNECTIONS = 1024                 # client and not-yet-handshaken connections; more are refused at once
CLIENT_IDLE_TIMEOUT = 600.0            # a client connection with no traffic either way this long is closed
PARTIAL_FRAME_TIMEOUT = 30.0           # a client frame that takes longer to arrive closes its connection
SWEEP_SECONDS = 1.0                    # how often the listener looks for idle and slow connections
# No real cluster reaches a term or index of 2^62 (at a million elections or entries a second
# that is 146,000 years). A message claiming one is forged or corrupt: accepted, a term of
# 2^64-1 left every node unable to campaign (term + 1 no longer encodes), found by the fuzzer.
MAX_RAFT_NUMBER = 1 << 62


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

    async def wait_closed(self) -> None:
        """Return once the connection is lost."""
        await asyncio.shield(self._closed_waiter)


class _NullHandler:
    def on_frame(self, conn: Connection, frame: tuple) -> None:
        pass

    def on_close(self, conn: Connection) -> None:
        pass


_NULL_HANDLER = _NullHandler()


def check_handshake(frame: tuple, cluster_id: str) -> Optional[tuple[int, str]]:
    """None if `frame` is an acceptable handshake for `cluster_id`, else (error code, reason)."""
    if frame[0] != FRAME_HANDSHAKE:
        return ERR_BAD_REQUEST, "the first frame must be a handshake"
    _, version, role, _node_id, their_cluster, _auth = frame
    if version != PROTOCOL_VERSION:
        return ERR_VERSION, f"protocol version {version} is not {PROTOCOL_VERSION}"
    if their_cluster != cluster_id:
        return ERR_CLUSTER_MISMATCH, f"cluster id {their_cluster!r} is not {cluster_id!r}"
    if role not in (ROLE_PEER, ROLE_CLIENT):
        return ERR_BAD_REQUEST, f"unknown role {role}"
    return None


class _Acceptor:
    """Handler of an accepted connection until its handshake: routes it to peers or clients."""

    def __init__(self, listener: "Listener") -> None:
        self.listener = listener
        self.timer: Optional[asyncio.TimerHandle] = None

    def on_frame(self, conn: Connection, frame: tuple) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.listener.route(conn, frame)

    def on_close(self, conn: Connection) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.listener.pending.discard(conn)


class _TlsAccept(asyncio.Protocol):
    """An accepted TCP connection that must complete a TLS handshake before its Connection sees a byte."""

    def __init__(self, listener: "Listener", conn: Connection) -> None:
        self.listener = listener
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        transport.pause_reading()      # nothing is read before start_tls takes the socket over
        peer = transport.get_extra_info("peername")
        if peer:
            self.conn.remote = f"{peer[0]}:{peer[1]}"
        asyncio.get_running_loop().create_task(self._upgrade(transport))

    async def _upgrade(self, transport: asyncio.BaseTransport) -> None:
        listener = self.listener
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport, self.conn, listener.ssl_server, server_side=True,  # type: ignore[arg-type]
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, OSError, ConnectionError, asyncio.TimeoutError) as exc:
            log.warning("node %d refused a TLS connection from %s: %s", listener.node_id, self.conn.remote,
                        describe(exc))
            transport.abort()
            self.conn.connection_lost(exc if isinstance(exc, Exception) else None)
            return
        if tls is None:                # closed during the handshake
            self.conn.connection_lost(None)
            return
        self.conn.connection_made(tls)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        pass                           # start_tls owns the socket from connection_made on


class _ProofWait:
    """Handler of an accepted connection between our shared-secret reply and the connector's proof."""

    def __init__(self, listener: "Listener", hello: tuple, auth: AcceptorAuth) -> None:
        self.listener = listener
        self.hello = hello
        self.auth = auth
        self.timer: Optional[asyncio.TimerHandle] = None

    def on_frame(self, conn: Connection, frame: tuple) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if frame[0] != FRAME_HANDSHAKE:
            conn.fail(ERR_CLUSTER_MISMATCH, "authentication failed: expected the shared-secret proof")
            return
        try:
            self.auth.verify(frame[5])
        except AuthError as exc:
            conn.fail(ERR_CLUSTER_MISMATCH, f"authentication failed: {exc}")
            return
        self.listener.admit(conn, self.hello)

    def on_close(self, conn: Connection) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.listener.pending.discard(conn)


class _Refused(asyncio.Protocol):
    """A connection over the limit: closed as soon as it is made, before reading anything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        transport.abort()


class Listener:
    """The node's one port: accepts connections and hands each, after its handshake, to peers or clients."""

    def __init__(self, node_id: int, cluster_id: str, peers: "PeerTransport",
                 client_handler_factory: Callable[[Connection], Handler], *, max_frame: int = DEFAULT_MAX_FRAME,
                 max_connections: Optional[int] = None, client_max_buffer: Optional[int] = None,
                 idle_timeout: Optional[float] = None, partial_frame_timeout: Optional[float] = None,
                 tls: Optional[TlsFiles] = None, secret: Optional[bytes] = None) -> None:
        self.node_id = node_id
        self.ssl_server = tls.server_context() if tls is not None else None
        self.secret = secret
        self.cluster_id = cluster_id
        self.peers = peers
        self.client_handler_factory = client_handler_factory
        self.max_frame = max_frame
        # None = the module's default, read now (tests lower them with monkeypatch).
        self.max_connections = MAX_CONNECTIONS if max_connections is None else max_connections
        self.client_max_buffer = CLIENT_MAX_BUFFER if client_max_buffer is None else client_max_buffer
        self.idle_timeout = CLIENT_IDLE_TIMEOUT if idle_timeout is None else idle_timeout
        self.partial_frame_timeout = PARTIAL_FRAME_TIMEOUT if partial_frame_timeout is None else partial_frame_timeout
        self.server: Optional[asyncio.base_events.Server] = None
        self.clients: set[Connection] = set()
        self.pending: set[Connection] = set()    # accepted, handshake not yet received
        self.refused = 0                         # connections refused over max_connections
        self._refused_logged = 0.0
        self._sweeper: Optional[asyncio.TimerHandle] = None

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0 picks a free one; see `port`)."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._new_connection, host, port, reuse_address=True, backlog=512)
        self._sweeper = loop.call_later(SWEEP_SECONDS, self._sweep)

    @property
    def port(self) -> int:
        """The port actually listened on."""
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def _new_connection(self) -> asyncio.Protocol:
        if len(self.clients) + len(self.pending) >= self.max_connections:
            self.refused += 1
            now = time.monotonic()
            if now - self._refused_logged > 10.0:     # one line per 10 s, not one per connection
                self._refused_logged = now
                log.warning("node %d refused a connection: %d client connections open, the limit is %d "
                            "(%d refused so far)", self.node_id, len(self.clients) + len(self.pending),
                            self.max_connections, self.refused)
            return _Refused()
        acceptor = _Acceptor(self)
        conn = Connection(acceptor, max_frame=self.max_frame)
        self.pending.add(conn)
        acceptor.timer = asyncio.get_running_loop().call_later(
            HANDSHAKE_TIMEOUT, lambda: conn.fail(ERR_BAD_REQUEST, "no handshake in time", level=logging.DEBUG))
        if self.ssl_server is not None:
            return _TlsAccept(self, conn)
        return conn

    def route(self, conn: Connection, frame: tuple) -> None:
        """Check the handshake `frame` and give the connection to its handler, or refuse it."""
        self.pending.discard(conn)
        problem = check_handshake(frame, self.cluster_id)
        if problem is None and frame[2] == ROLE_PEER:
            peer_id = frame[3]
            if peer_id == self.node_id:
                problem = ERR_BAD_REQUEST, f"a peer claims this node's own id {peer_id}"
            elif peer_id not in self.peers.addresses and not self.peers.accept_unknown:
                problem = ERR_BAD_REQUEST, f"node {peer_id} is not a member of this cluster"
        if problem is not None:
            conn.fail(*problem)
            return
        if self.secret is not None:
            auth = AcceptorAuth(self.secret, self.cluster_id, self.node_id)
            try:
                reply = auth.reply(frame[5], frame[2], frame[3])
            except AuthError as exc:
                conn.fail(ERR_CLUSTER_MISMATCH, f"authentication failed: {exc}")
                return
            conn.send(encode_handshake(PROTOCOL_VERSION, ROLE_PEER, self.node_id, self.cluster_id, reply))
            wait = _ProofWait(self, frame, auth)
            conn.handler = wait
            self.pending.add(conn)                   # still counts against the limit
            wait.timer = asyncio.get_running_loop().call_later(
                HANDSHAKE_TIMEOUT, lambda: conn.fail(ERR_CLUSTER_MISMATCH, "authentication failed: no proof in time"))
            return
        conn.send(encode_handshake(PROTOCOL_VERSION, ROLE_PEER, self.node_id, self.cluster_id))
        self.admit(conn, frame)

    def admit(self, conn: Connection, frame: tuple) -> None:
        """Hand a handshaken (and, with a secret, authenticated) connection to the peers or the client service."""
        self.pending.discard(conn)
        conn.role = frame[2]
        if conn.role == ROLE_PEER:
            self.peers.attach(conn, frame[3])
        else:
            self.clients.add(conn)
            conn.max_buffer = self.client_max_buffer
            handler = self.client_handler_factory(conn)
            conn.handler = _ClientTracker(self, handler)

    def _sweep(self) -> None:
        """Close client connections that are idle past idle_timeout or trickle a frame (slow loris)."""
        now = time.monotonic()
        for conn in list(self.clients):
            if conn.decoder.buffered and now - conn.last_frame > self.partial_frame_timeout:
                conn.fail(ERR_TIMEOUT, f"{conn.decoder.buffered} bytes of a frame in "
                                       f"{now - conn.last_frame:.0f}s without finishing it")
            elif now - max(conn.last_frame, conn.last_sent) > self.idle_timeout:
                log.info("client connection from %s idle for %.0fs; closing it", conn.remote, self.idle_timeout)
                conn.close()
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._sweep)

    async def close(self) -> None:
        """Stop accepting and close every client connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.server is not None:
            self.server.close()
        for conn in list(self.clients) + list(self.pending):
            conn.close()


class _ClientTracker:
    """Wraps a client handler so the listener forgets the connection when it closes."""

    __slots__ = ("listener", "inner")

    def __init__(self, listener: Listener, inner: Handler) -> None:
        self.listener = listener
        self.inner = inner

    def on_frame(self, conn: Connection, frame: tuple) -> None:
        self.inner.on_frame(conn, frame)

    def on_close(self, conn: Connection) -> None:
        self.listener.clients.discard(conn)
        self.inner.on_close(conn)


class PeerTransport:
    """Raft messages to and from the other members, over one connection per pair.

    `send(msg)` encodes and queues (or drops) at once; `on_message(msg)` is called for every
    message received; `on_peer(peer_id, up)` when a peer's connection comes or goes.
    """

    def __init__(self, node_id: int, cluster_id: str, addresses: dict[int, str],
                 on_message: Callable[[Message], None], on_peer: Callable[[int, bool], None] = lambda p, up: None,
                 *, max_frame: int = DEFAULT_MAX_FRAME, queue_bytes: int = PEER_QUEUE_BYTES,
                 rng: Optional[random.Random] = None, tls: Optional[TlsFiles] = None,
                 secret: Optional[bytes] = None) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.ssl_client = tls.client_context() if tls is not None else None
        self.secret = secret
        self.auth_warned: set[int] = set()     # peers whose failed authentication was logged
        self.addresses = dict(addresses)
        self.on_message = on_message
        self.on_peer = on_peer
        self.max_frame = max_frame
        self.queue_bytes = queue_bytes
        self.rng = rng or random.Random()
        self.conns: dict[int, Connection] = {}
        self.dropped: dict[int, int] = {p: 0 for p in addresses if p != node_id}
        self._dialers: list[asyncio.Task] = []
        self._closing = False
        self._started = False
        # A node started with --join knows no members yet: it accepts any peer of its cluster.
        self.accept_unknown = False

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start dialing every peer with a higher id (the lower id of a pair dials)."""
        self._started = True
        for peer_id in sorted(self.addresses):
            if peer_id > self.node_id:
                self._dialers.append(asyncio.get_running_loop().create_task(self._dial_forever(peer_id)))

    def add_peer(self, peer_id: int, address: str) -> None:
        """A member added by a configuration change: remember its address and dial it if we are the lower id."""
        known = peer_id in self.addresses
        self.addresses[peer_id] = address
        self.dropped.setdefault(peer_id, 0)
        if not known and self._started and not self._closing and peer_id > self.node_id:
            self._dialers.append(asyncio.get_running_loop().create_task(self._dial_forever(peer_id)))

    async def close(self) -> None:
        """Stop dialing and close every peer connection."""
        self._closing = True
        for task in self._dialers:
            task.cancel()
        for task in self._dialers:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for conn in list(self.conns.values()):
            conn.close()

    def connected(self, peer_id: int) -> bool:
        """True while a handshaken connection to `peer_id` is up."""
        conn = self.conns.get(peer_id)
        return conn is not None and not conn.closed

    # -- sending ----------------------------------------------------------------------------
    def send(self, msg: Message) -> bool:
        """Queue `msg` for its recipient; False when there is no connection or its queue is full (Raft resends)."""
        conn = self.conns.get(msg.to)
        if conn is None or conn.closed:
            self.dropped[msg.to] = self.dropped.get(msg.to, 0) + 1
            return False
        try:
            frame = encode_raft(*msg)
        except (OverflowError, ValueError) as exc:
            # Must not escape: it would abandon the Ready being processed and stall the node.
            log.error("node %d: cannot encode %s to %d: %s; dropped", self.node_id, msg.type, msg.to, exc)
            self.dropped[msg.to] = self.dropped.get(msg.to, 0) + 1
            return False
        if not conn.send(frame, droppable=True):
            self.dropped[msg.to] = self.dropped.get(msg.to, 0) + 1
            return False
        return True

    # -- receiving --------------------------------------------------------------------------
    def on_frame(self, conn: Connection, frame: tuple) -> None:
        if frame[0] != FRAME_RAFT:
            conn.fail(ERR_BAD_REQUEST, f"unexpected frame type {frame[0]} on a peer connection")
            return
        msg = Message(*frame[1:])
        if msg.frm != conn.peer_id or msg.to != self.node_id:
            conn.fail(ERR_BAD_REQUEST, f"message from {msg.frm} to {msg.to} on the connection of peer {conn.peer_id}")
            return
        if max(msg.term, msg.log_term, msg.index, msg.commit, msg.hint_index, msg.hint_term) >= MAX_RAFT_NUMBER:
            conn.fail(ERR_BAD_REQUEST, f"message {msg.type} with a term or index of 2^62 or more")
            return
        self.on_message(msg)

    def on_close(self, conn: Connection) -> None:
        if self.conns.get(conn.peer_id) is conn:
            del self.conns[conn.peer_id]
            if not self._closing:
                log.info("node %d lost peer %d", self.node_id, conn.peer_id)
            self.on_peer(conn.peer_id, False)

    def attach(self, conn: Connection, peer_id: int) -> None:
        """Adopt a handshaken connection to `peer_id`, replacing an older one (the peer restarted)."""
        conn.peer_id = peer_id
        conn.role = ROLE_PEER
        conn.max_queue_bytes = self.queue_bytes
        conn.max_buffer = self.max_frame + 5
        old = self.conns.get(peer_id)
        self.conns[peer_id] = conn
        conn.handler = self
        if old is not None and not old.closed:
            old.handler = _NULL_HANDLER
            old.abort()
        else:
            log.info("node %d connected to peer %d", self.node_id, peer_id)
        self.on_peer(peer_id, True)

    # -- dialing ----------------------------------------------------------------------------
    async def _dial_forever(self, peer_id: int) -> None:
        """Keep one connection to `peer_id` up: connect, handshake, wait for loss, back off, repeat."""
        host, port = parse_address(self.addresses[peer_id])
        loop = asyncio.get_running_loop()
        failures = 0
        tls_reported: Optional[str] = None
        while not self._closing:
            conn: Optional[Connection] = None
            try:
                dialer = _Dialer(self, peer_id)
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: Connection(dialer, max_frame=self.max_frame), host, port,
                                           ssl=self.ssl_client), CONNECT_TIMEOUT)
                conn.role = ROLE_PEER
                conn.peer_id = peer_id
                hello = dialer.auth.hello() if dialer.auth is not None else b""
                conn.send(encode_handshake(PROTOCOL_VERSION, ROLE_PEER, self.node_id, self.cluster_id, hello))
                ok = await asyncio.wait_for(dialer.done, HANDSHAKE_TIMEOUT)
                if ok:
                    failures = 0
                    tls_reported = None
                    up_since = time.monotonic()
                    await conn.wait_closed()
                    if time.monotonic() - up_since < 1.0:
                        failures = 1  # flapping: do not hammer the peer
                else:
                    failures += 1
            except asyncio.CancelledError:
                if conn is not None:
                    conn.abort()
                raise
            except ssl.SSLError as exc:
                if conn is not None:
                    conn.abort()
                reason = describe(exc)
                if reason != tls_reported:      # once per reason, not once per attempt
                    tls_reported = reason
                    log.warning("node %d: TLS handshake with peer %d at %s failed: %s", self.node_id, peer_id,
                                self.addresses[peer_id], reason)
                failures += 1
            except (OSError, asyncio.TimeoutError) as exc:
                if conn is not None:
                    conn.abort()
                if failures == 0:
                    log.debug("node %d cannot reach peer %d at %s: %s", self.node_id, peer_id,
                              self.addresses[peer_id], exc or type(exc).__name__)
                failures += 1
            if self._closing:
                return
            # Capped exponential backoff with full jitter in [delay/2, delay): peers that
            # restart together do not reconnect in lockstep.
            delay = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** min(failures, 16))) if failures else BACKOFF_BASE
            await asyncio.sleep(delay * (0.5 + 0.5 * self.rng.random()))


class _Dialer:
    """Handler of a dialed connection until the peer's handshake answers ours."""

    def __init__(self, transport: PeerTransport, peer_id: int) -> None:
        self.transport = transport
        self.peer_id = peer_id
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.auth = (ConnectorAuth(transport.secret, transport.cluster_id, ROLE_PEER, transport.node_id)
                     if transport.secret is not None else None)

    def on_frame(self, conn: Connection, frame: tuple) -> None:
        if frame[0] == FRAME_HANDSHAKE:
            problem = check_handshake(frame, self.transport.cluster_id)
            if problem is None and frame[3] != self.peer_id:
                problem = ERR_BAD_REQUEST, f"expected node {self.peer_id} at this address, found node {frame[3]}"
            if problem is not None:
                conn.fail(*problem)
                self._finish(False)
                return
            if self.auth is not None:
                proof, ok = self.auth.answer(frame[5], frame[3])
                conn.send(encode_handshake(PROTOCOL_VERSION, ROLE_PEER, self.transport.node_id,
                                           self.transport.cluster_id, proof))
                if not ok:
                    if self.peer_id not in self.transport.auth_warned:    # once until it succeeds
                        self.transport.auth_warned.add(self.peer_id)
                        log.warning("node %d: peer %d at %s did not prove the shared secret (wrong secret?); "
                                    "closing it", self.transport.node_id, self.peer_id, conn.remote)
                    conn.close()
                    self._finish(False)
                    return
                self.transport.auth_warned.discard(self.peer_id)
            self.transport.attach(conn, self.peer_id)
            self._finish(True)
        elif frame[0] == FRAME_ERROR:  # the peer refused us
            _, _rid, _code, _leader, _addr, message = frame
            log.warning("node %d: peer %d refused the connection: %s", self.transport.node_id, self.peer_id, message)
            conn.close()
            self._finish(False)
        else:
            conn.fail(ERR_BAD_REQUEST, "the first frame must be a handshake")
            self._finish(False)

    def on_close(self, conn: Connection) -> None:
        self._finish(False)

    def _finish(self, ok: bool) -> None:
        if not self.done.done():
            self.done.set_result(ok)
