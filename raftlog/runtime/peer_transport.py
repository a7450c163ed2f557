"""Raft traffic between members: one connection per pair of nodes, dialed and kept up, with bounded queues.

Exactly one connection links each pair of nodes: the node with the lower id dials, the higher
id accepts (runtime/listener.py hands it to `PeerTransport.attach`), and both send over it. A
dialer reconnects with capped exponential backoff and jitter. Each peer's outgoing queue is
bounded in bytes; what does not fit is dropped, because Raft resends whatever a follower did
not acknowledge (a dead or stopped peer therefore costs a bounded amount of memory). Messages
received are checked against the connection they came on before the node sees them.

Each handshake carries the sender's data-dir incarnation (raftlog.core.incarnations): both ends
check the other's with `refusal` (the dialer here, the acceptor in runtime/listener.py). A
first contact is learned and saved before the connection is used; a peer that presents another
incarnation than the one known for its id is answered with an error frame and closed, one log
line per refused peer. The refused node records who refused it (`refused_by`, shown in the
node's status) and, since every member that knew it refuses it, can neither win a vote nor
disrupt one.
"""
from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from typing import Callable, Optional

from raftlog.core.incarnations import IncarnationBook, Verdict
from raftlog.core.messages import Message
from raftlog.hot import (
    DEFAULT_MAX_FRAME,
    ERR_BAD_REQUEST,
    ERR_CLUSTER_MISMATCH,
    FRAME_ERROR,
    FRAME_HANDSHAKE,
    FRAME_RAFT,
    ROLE_PEER,
    encode_raft,
)
from raftlog.wire.auth import ConnectorAuth
from raftlog.runtime.connection import PEER_QUEUE_BYTES, Connection
from raftlog.wire.handshake import (
    HANDSHAKE_TIMEOUT,
    check_handshake,
    is_replaced_refusal,
    node_handshake,
    replaced_reason,
)
from raftlog.wire.addresses import parse_address
from raftlog.wire.tls import TlsFiles, describe

log = logging.getLogger("raftlog.transport")

BACKOFF_BASE = 0.05            # first reconnect delay, seconds
BACKOFF_CAP = 2.0              # largest reconnect delay, seconds
CONNECT_TIMEOUT = 2.0
# No real cluster reaches a term or index of 2^62 (at a million elections or entries a second
# that is 146,000 years). A message claiming one is forged or corrupt: accepted, a term of
# 2^64-1 left every node unable to campaign (term + 1 no longer encodes), found by the fuzzer.
MAX_RAFT_NUMBER = 1 << 62


class PeerTransport:
    """Raft messages to and from the other members, over one connection per pair.

    `send(msg)` encodes and queues (or drops) at once; `on_message(msg)` is called for every
    message received; `on_peer(peer_id, up)` when a peer's connection comes or goes.
    `incarnation` is this node's data dir's, sent in every handshake; `book` (None: no check)
    holds the incarnations known for the peers and `save_book(known)` persists it durably.
    """

    def __init__(self, node_id: int, cluster_id: str, addresses: dict[int, str],
                 on_message: Callable[[Message], None], on_peer: Callable[[int, bool], None] = lambda p, up: None,
                 *, max_frame: int = DEFAULT_MAX_FRAME, queue_bytes: int = PEER_QUEUE_BYTES,
                 rng: Optional[random.Random] = None, tls: Optional[TlsFiles] = None,
                 secret: Optional[bytes] = None, incarnation: int = 0,
                 book: Optional[IncarnationBook] = None,
                 save_book: Callable[[dict[int, int]], None] = lambda known: None) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self.book = book
        self.save_book = save_book
        self.refusal_logged: dict[int, int] = {}   # peer -> the refused incarnation already logged
        self.refused_by: dict[int, str] = {}       # peer -> why it refuses this node's data dir
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
        if frame[0] == FRAME_ERROR and self.refused_by_peer(conn.peer_id, frame[5]):
            conn.close()    # the peer dialed us, and refused our answer
            return
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
        if self.refused_by:
            self.refused_by.pop(msg.frm, None)     # it talks to us: it no longer refuses us
        self.on_message(msg)

    def on_close(self, conn: Connection) -> None:
        if self.conns.get(conn.peer_id) is conn:
            del self.conns[conn.peer_id]
            if not self._closing:
                # While a peer refuses us, its every retry would be two lines: DEBUG then.
                log.log(logging.DEBUG if conn.peer_id in self.refused_by else logging.INFO,
                        "node %d lost peer %d", self.node_id, conn.peer_id)
            self.on_peer(conn.peer_id, False)

    def admits(self, peer_id: int) -> bool:
        """True if node `peer_id` may open a peer connection: a known member, or anyone of the cluster while joining."""
        return peer_id in self.addresses or self.accept_unknown

    def refusal(self, peer_id: int, incarnation: int) -> Optional[str]:
        """None when node `peer_id` presenting `incarnation` may connect (a first contact is saved first), else why not.

        A refusal is logged once per peer and incarnation, not once per reconnection attempt.
        """
        if self.book is None:
            return None
        verdict = self.book.check(peer_id, incarnation)
        if verdict is Verdict.LEARN:
            self.save_book(self.book.known())
            log.info("node %d learned the incarnation of node %d: %x", self.node_id, peer_id, incarnation)
        if verdict.accepted:
            self.refusal_logged.pop(peer_id, None)
            return None
        known = self.book.known_incarnation(peer_id)
        assert known is not None
        reason = replaced_reason(self.node_id, peer_id, incarnation, known)
        if self.refusal_logged.get(peer_id) != incarnation:
            self.refusal_logged[peer_id] = incarnation
            log.error("%s", reason)
        return reason

    def refuse(self, conn: Connection, reason: str) -> None:
        """Answer a refused peer's handshake with an error frame naming `reason`, and close (logged by `refusal`)."""
        conn.fail(ERR_CLUSTER_MISMATCH, reason, level=logging.DEBUG)

    def forget_all_but(self, members: set[int]) -> None:
        """A committed configuration names `members`: forget (durably) the incarnations of everyone else."""
        if self.book is not None and self.book.forget_all_but(members):
            self.save_book(self.book.known())
            for peer_id in [p for p in self.refusal_logged if p not in members]:
                del self.refusal_logged[peer_id]

    def refused_by_peer(self, peer_id: int, message: str) -> bool:
        """Note an error frame from `peer_id`; True when it refuses this node's data dir (logged once per peer)."""
        if not is_replaced_refusal(message):
            return False
        if self.refused_by.get(peer_id) != message:
            log.error("node %d is refused by node %d: %s", self.node_id, peer_id, message)
        self.refused_by[peer_id] = message
        return True

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
            old.abandon()
        else:
            log.log(logging.DEBUG if peer_id in self.refused_by else logging.INFO,
                    "node %d connected to peer %d", self.node_id, peer_id)
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
                    loop.create_connection(lambda d=dialer: Connection(d, max_frame=self.max_frame), host, port,
                                           ssl=self.ssl_client), CONNECT_TIMEOUT)
                conn.role = ROLE_PEER
                conn.peer_id = peer_id
                hello = dialer.auth.hello() if dialer.auth is not None else b""
                conn.send(node_handshake(self.node_id, self.cluster_id, hello, self.incarnation))
                ok = await asyncio.wait_for(dialer.done, HANDSHAKE_TIMEOUT)
                if ok:
                    tls_reported = None
                    up_since = time.monotonic()
                    await conn.wait_closed()
                    if peer_id in self.refused_by:
                        failures += 1     # it refused our data dir after its handshake: back off
                    else:
                        failures = 1 if time.monotonic() - up_since < 1.0 else 0  # 1: flapping, do not hammer
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
                conn.send(node_handshake(self.transport.node_id, self.transport.cluster_id, proof,
                                         self.transport.incarnation))
                if not ok:
                    if self.peer_id not in self.transport.auth_warned:    # once until it succeeds
                        self.transport.auth_warned.add(self.peer_id)
                        log.warning("node %d: peer %d at %s did not prove the shared secret (wrong secret?); "
                                    "closing it", self.transport.node_id, self.peer_id, conn.remote)
                    conn.close()
                    self._finish(False)
                    return
                self.transport.auth_warned.discard(self.peer_id)
            reason = self.transport.refusal(self.peer_id, frame[6])
            if reason is not None:
                self.transport.refuse(conn, reason)
                self._finish(False)
                return
            self.transport.attach(conn, self.peer_id)
            self._finish(True)
        elif frame[0] == FRAME_ERROR:  # the peer refused us
            _, _rid, _code, _leader, _addr, message = frame
            if not self.transport.refused_by_peer(self.peer_id, message):
                log.warning("node %d: peer %d refused the connection: %s", self.transport.node_id, self.peer_id,
                            message)
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
