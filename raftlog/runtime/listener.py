"""The node's one port: admits connections and hands each, once admitted, to the peers or the clients.

Admission, in order: a connection over the limit is closed before anything is read; with TLS
the socket is upgraded before a byte reaches the `Connection`; the first frame must be an
acceptable handshake (wire/handshake.py), from a member when it claims to be a peer; with a
shared secret the connector must then prove it (wire/auth.py); a peer must then present a
data-dir incarnation its `PeerSink` does not refuse (raftlog.core.incarnations: checked only
once authenticated, so nobody without the secret can make this node learn one). An admitted peer connection
goes to the `PeerSink` the listener is given (runtime/peer_transport.py), a client connection
to the handler the client service makes for it (runtime/server.py). The listener also closes
client connections that sit idle or trickle a frame too slowly (slow loris).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import time
from typing import Callable, Optional, Protocol

from raftlog.errors import AddressInUse
from raftlog.hot import (
    DEFAULT_MAX_FRAME,
    ERR_BAD_REQUEST,
    ERR_CLUSTER_MISMATCH,
    ERR_TIMEOUT,
    FRAME_HANDSHAKE,
    ROLE_PEER,
)
from raftlog.wire.auth import AcceptorAuth, AuthError
from raftlog.runtime.connection import Connection, Handler
from raftlog.wire.handshake import HANDSHAKE_TIMEOUT, check_handshake, node_handshake
from raftlog.wire.tls import TlsFiles, describe

log = logging.getLogger("raftlog.transport")

# Limits that keep a hostile or broken sender from costing unbounded memory or sockets.
CLIENT_MAX_BUFFER = (4 << 20) + (1 << 20)   # a client's unfinished frame: the largest append plus slack
MAX_CONNECTIONS = 1024                 # client and not-yet-handshaken connections; more are refused at once
CLIENT_IDLE_TIMEOUT = 600.0            # a client connection with no traffic either way this long is closed
PARTIAL_FRAME_TIMEOUT = 30.0           # a client frame that takes longer to arrive closes its connection
SWEEP_SECONDS = 1.0                    # how often the listener looks for idle and slow connections


class PeerSink(Protocol):
    """Whoever owns the peer connections (PeerTransport): which peers may connect, and where they go."""

    incarnation: int        # this node's data dir's, sent in every handshake this node answers

    def admits(self, peer_id: int) -> bool:
        """True if node `peer_id` may open a peer connection to this node (a member, or any while joining)."""

    def refusal(self, peer_id: int, incarnation: int) -> Optional[str]:
        """None when node `peer_id` presenting data-dir `incarnation` may connect (learning it if new), else why not."""

    def refuse(self, conn: Connection, reason: str) -> None:
        """Answer a refused peer with an error frame naming `reason`, and close."""

    def attach(self, conn: Connection, peer_id: int) -> None:
        """Adopt `conn`, handshaken (and authenticated) as node `peer_id`'s peer connection."""


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

    def __init__(self, node_id: int, cluster_id: str, peers: PeerSink,
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
        self.on_refuse: Optional[Callable[[int], None]] = None   # told the ERR_* code of each refusal (metrics)
        self._refused_logged = 0.0
        self._sweeper: Optional[asyncio.TimerHandle] = None

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0 picks a free one; see `port`); AddressInUse when it is taken."""
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(self._new_connection, host, port, reuse_address=True, backlog=512)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(f"{host}:{port}") from exc
            raise
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
        conn.on_fail = self.on_refuse
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
            elif not self.peers.admits(peer_id):
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
            conn.send(node_handshake(self.node_id, self.cluster_id, reply, self.peers.incarnation))
            wait = _ProofWait(self, frame, auth)
            conn.handler = wait
            self.pending.add(conn)                   # still counts against the limit
            wait.timer = asyncio.get_running_loop().call_later(
                HANDSHAKE_TIMEOUT, lambda: conn.fail(ERR_CLUSTER_MISMATCH, "authentication failed: no proof in time"))
            return
        conn.send(node_handshake(self.node_id, self.cluster_id, b"", self.peers.incarnation))
        self.admit(conn, frame)

    def admit(self, conn: Connection, frame: tuple) -> None:
        """Hand a handshaken (and, with a secret, authenticated) connection to the peers or the client service."""
        self.pending.discard(conn)
        conn.role = frame[2]
        if conn.role == ROLE_PEER:
            reason = self.peers.refusal(frame[3], frame[6])
            if reason is not None:
                self.peers.refuse(conn, reason)
                return
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
