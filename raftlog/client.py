"""raftlog.Client and raftlog.AsyncClient: talk to a cluster from any member's address.

The client keeps one connection, to the leader once it has found it: a not-leader answer
names the leader's address and the client follows it; with no leader known (an election is
running) it tries the other members with a short backoff. Many requests are in flight on the
connection at once (each carries a request id), so `append_many` splits its payloads into
requests of bounded size and sends them all before waiting (pipelining).

Retries: a request that fails on connection loss, a shutting-down node or a redirect is sent
again until the deadline (`timeout` seconds per call). A retried append whose first attempt
did commit is appended twice: delivery is at-least-once. When the deadline passes,
`raftlog.Timeout` is raised and the outcome is unknown.
"""
from __future__ import annotations

import asyncio
import errno
import json
import random
import socket
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, AsyncGenerator, Callable, Coroutine, Iterable, Iterator, Optional, Sequence, \
    TypeVar, Union

from raftlog.blocking_iter import blocking_iter
from raftlog.entry import Entry
from raftlog.errors import Closed, Compacted, NoLeader, RaftlogError, Removed, SessionExpired, Timeout, Unreachable
from raftlog.hot import (
    DEFAULT_MAX_FRAME,
    ERR_BAD_REQUEST,
    ERR_CLUSTER_MISMATCH,
    ERR_NOT_LEADER,
    ERR_REMOVED,
    ERR_SESSION_EXPIRED,
    ERR_COMPACTED,
    ERR_SHUTTING_DOWN,
    ERR_TIMEOUT,
    ERR_TOO_LARGE,
    ERR_VERSION,
    FRAME_APPENDED,
    FRAME_ENTRIES,
    FRAME_ERROR,
    FRAME_HANDSHAKE,
    FRAME_STATUS_REPLY,
    KIND_DATA,
    KIND_SESSION,
    PROTOCOL_VERSION,
    READ_STALE,
    ROLE_CLIENT,
    FrameDecoder,
    RecordBatch,
    encode_append,
    encode_handshake,
    encode_read,
    encode_status,
)
from raftlog.wire.auth import ConnectorAuth
from raftlog.wire.addresses import PeerSpecError, parse_address, parse_peers
from raftlog.wire.requests import admin_request, backup_request, consistency_code

if TYPE_CHECKING:
    from raftlog.storage.backup_file import BackupHeader

__all__ = ["AsyncClient", "Client", "RequestRejected", "Addresses"]

Addresses = Union[str, Sequence[str]]
T = TypeVar("T")

REQUEST_BYTES = 1 << 20       # payload bytes per Append request in append_many
REQUEST_COUNT = 16_384        # payloads per Append request
MAX_IN_FLIGHT = 64            # Append requests in flight per append_many call
READ_ENTRIES = 10_000
READ_BYTES = 4 << 20
ATTEMPT_TIMEOUT = 5.0          # seconds of silence from a member before trying another one


class RequestRejected(RaftlogError, ValueError):
    """The cluster refused a request for good (too large, malformed, wrong cluster): retrying will not help."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Retry(Exception):
    """Internal: try again (on `address` if given) after a short pause.

    `member` is the member the attempt failed on and `outcome` what happened there (REFUSED,
    UNRESOLVED, NO_CONNECTION, NO_LEADER or REDIRECTED), when the failure says something
    about that member's reachability.
    """

    def __init__(self, reason: str, address: Optional[str] = None, pause: bool = True,
                 member: Optional[str] = None, outcome: Optional[str] = None) -> None:
        super().__init__(reason)
        self.address = address
        self.pause = pause
        self.member = member
        self.outcome = outcome


# What a call last saw from a member: nothing listening, a name that does not resolve, no
# connection (timeout, reset), or an answer without a leader to point to / with a redirect.
REFUSED, UNRESOLVED, NO_CONNECTION, NO_LEADER, REDIRECTED = (
    "refused the connection", "did not resolve", "could not be connected to", "knows no leader", "redirected")


def _connect_outcome(exc: BaseException) -> str:
    """REFUSED, UNRESOLVED or NO_CONNECTION for an exception raised while connecting."""
    if isinstance(exc, socket.gaierror):
        return UNRESOLVED
    if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
        return REFUSED
    return NO_CONNECTION


def normalize_addresses(addresses: Addresses) -> list[str]:
    """Accept `"1=h:p,2=h:p"`, `"h:p,h:p"` or a list of `"h:p"`; return the HOST:PORT list."""
    if isinstance(addresses, str):
        return list(parse_peers(addresses, require_ids=False).values())
    out: list[str] = []
    for item in addresses:
        out.extend(parse_peers(item, require_ids=False).values())
    if not out:
        raise ValueError("no addresses given")
    return out


class _Connection(asyncio.Protocol):
    """One client connection: request id -> future; the server's frames resolve them."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.node_id = 0
        self.decoder = FrameDecoder(DEFAULT_MAX_FRAME)
        self.transport: Optional[asyncio.Transport] = None
        self.waiters: dict[int, asyncio.Future] = {}
        self.streams: dict[int, asyncio.Queue] = {}   # request id -> its reply frames (a streamed reply)
        self.handshake: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed = False
        self.is_leader = False
        self.retiring = False      # no new requests; close once the last answer is in
        self.last_heard = time.monotonic()
        self._next_id = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_heard = time.monotonic()
        try:
            frames = self.decoder.feed(data)
        except Exception as exc:
            self._lose(ConnectionError(f"bad frame from {self.address}: {exc}"))
            return
        for frame in frames:
            ftype = frame[0]
            if ftype == FRAME_HANDSHAKE:
                self.node_id = frame[3]
                if not self.handshake.done():
                    self.handshake.set_result(frame)
                continue
            if ftype == FRAME_ERROR and frame[1] == 0:   # about the connection itself
                if not self.handshake.done():
                    self.handshake.set_result(frame)
                self._lose(ConnectionError(f"{self.address} closed the connection: {frame[5]}"))
                continue
            stream = self.streams.get(frame[1])
            if stream is not None:
                stream.put_nowait(frame)
                continue
            waiter = self.waiters.pop(frame[1], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)
            if self.retiring and not self.waiters:
                self.close()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        # With TLS the reason (e.g. the node refused our certificate) is worth showing.
        self._lose(ConnectionError(f"connection to {self.address} lost" + (f": {exc}" if exc else "")))

    def _lose(self, exc: Exception) -> None:
        self.closed = True
        if not self.handshake.done():
            self.handshake.set_exception(exc)
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_exception(exc)
        self.waiters.clear()
        for stream in self.streams.values():
            stream.put_nowait(exc)
        self.streams.clear()
        if self.transport is not None:
            self.transport.close()

    def request(self, build: Callable[[int], bytes]) -> asyncio.Future:
        """Send the frame `build(request_id)`; the future gets the reply frame (or ConnectionError)."""
        fut = asyncio.get_running_loop().create_future()
        if self.closed or self.transport is None:
            fut.set_exception(ConnectionError(f"connection to {self.address} is closed"))
            return fut
        rid = self._next_id
        self._next_id += 1
        self.waiters[rid] = fut
        self.transport.write(build(rid))
        return fut

    def stream(self, build: Callable[[int], bytes]) -> tuple[int, asyncio.Queue]:
        """Send `build(request_id)`; every reply frame on that id goes to the queue (then a ConnectionError if lost)."""
        queue: asyncio.Queue = asyncio.Queue()
        if self.closed or self.transport is None:
            queue.put_nowait(ConnectionError(f"connection to {self.address} is closed"))
            return 0, queue
        rid = self._next_id
        self._next_id += 1
        self.streams[rid] = queue
        self.transport.write(build(rid))
        return rid, queue

    def close(self) -> None:
        self._lose(ConnectionError("client closed"))

    def retire(self) -> None:
        """Take no new requests; close when the ones in flight are answered (or at once if none are)."""
        self.retiring = True
        if not self.waiters:
            self.close()


class AsyncClient:
    """Client for a raftlog cluster, for asyncio code. Every method is a coroutine; see the module doc.

    `addresses`: any members' HOST:PORT (a list, or `"1=h:p,2=h:p"` / `"h:p,h:p"`).
    `read_from="leader"` (default) reads from the leader when one is known; `"any"` reads
    from whichever member the client is connected to (useful to look at one node).
    `attempt_timeout`: seconds of silence after which a member is given up on for another.
    `fail_fast=True`: raise Unreachable as soon as every member has refused the connection or
    failed to resolve (nothing is running there), instead of retrying until the deadline.
    Either way a call that finds no leader by its deadline raises NoLeader (a Timeout) saying
    how many members were reachable.
    """

    def __init__(self, addresses: Addresses, *, cluster_id: str = "raftlog", timeout: float = 10.0,
                 read_from: str = "leader", attempt_timeout: float = ATTEMPT_TIMEOUT, tls: Any = None,
                 secret: Optional[bytes] = None, sessions: bool = True, fail_fast: bool = False) -> None:
        self.addresses = normalize_addresses(addresses)
        self.fail_fast = fail_fast
        # Exactly-once appends (issue 7, runtime/sessions.py): a random session id, requests
        # numbered from 1; a retried request is answered with its original index.
        self.sessions = sessions
        self.session_id = random.getrandbits(63) | 1
        self._seq = 0
        self._unanswered: set[int] = set()
        # Issue 8: `tls` is a raftlog.wire.tls.TlsFiles (mutual TLS), `secret` the cluster's
        # shared secret (HMAC challenge-response, wire/auth.py); both must match the nodes'.
        self._ssl = tls.client_context() if tls is not None else None
        self._secret = secret
        self.attempt_timeout = attempt_timeout
        if read_from not in ("leader", "any"):
            raise ValueError("read_from must be 'leader' or 'any'")
        self.cluster_id = cluster_id
        self.timeout = timeout
        self.read_from = read_from
        self._conn: Optional[_Connection] = None
        self._target: Optional[str] = None
        self._next = 0
        self._lock: Optional[asyncio.Lock] = None
        self._closed = False

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; the client is unusable afterwards (idempotent)."""
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- connection management --------------------------------------------------------------
    async def _connection(self, deadline: float) -> _Connection:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            current = self._conn
            if current is not None and not current.closed:
                return current
            address = self._target or self.addresses[self._next % len(self.addresses)]
            self._target = None
            host, port = parse_address(address)
            budget = max(0.05, min(2.0, deadline - time.monotonic()))
            try:
                transport, conn = await asyncio.wait_for(
                    asyncio.get_running_loop().create_connection(lambda: _Connection(address), host, port,
                                                                 ssl=self._ssl), budget)
                auth = ConnectorAuth(self._secret, self.cluster_id, ROLE_CLIENT, 0) if self._secret else None
                transport.write(encode_handshake(PROTOCOL_VERSION, ROLE_CLIENT, 0, self.cluster_id,
                                                 auth.hello() if auth is not None else b""))
                hello = await asyncio.wait_for(asyncio.shield(conn.handshake), budget)
            except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
                self._next += 1
                raise _Retry(f"cannot connect to {address}: {exc or type(exc).__name__}",
                             member=address, outcome=_connect_outcome(exc)) from None
            if hello[0] == FRAME_ERROR:
                code, message = hello[2], hello[5]
                if code in (ERR_CLUSTER_MISMATCH, ERR_VERSION):
                    raise RequestRejected(code, f"{address}: {message}")
                self._next += 1
                raise _Retry(f"{address} refused the connection: {message}")
            if auth is not None:
                proof, ok = auth.answer(hello[5], hello[3])
                transport.write(encode_handshake(PROTOCOL_VERSION, ROLE_CLIENT, 0, self.cluster_id, proof))
                if not ok:
                    conn.close()
                    raise RequestRejected(ERR_CLUSTER_MISMATCH, f"{address} did not prove the shared secret "
                                                                f"(wrong secret, or the node has none)")
            self._conn = conn
            return conn

    def _drop(self, conn: _Connection, target: Optional[str], *, now: bool = True) -> None:
        """Stop using `conn` for new requests and aim the next connection at `target` (or the next member).

        now=False (a redirect) lets the requests already in flight on it finish: a leader
        that stepped down still answers them once their fate is known, and closing would
        make the client retry appends that may well have committed.
        """
        if self._conn is conn:
            self._conn = None
        if now:
            conn.close()
        else:
            conn.retire()
        if target is None:
            self._next += 1
        self._target = target

    async def _call(self, build: Callable[[int], bytes], handle: Callable[[_Connection, tuple], T],
                    timeout: Optional[float] = None) -> T:
        """Send a request until `handle` accepts a reply.

        Redirects and connection loss are retried until the deadline.
        """
        if self._closed:
            raise Closed("the client is closed")
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        pause = 0.02
        last = "no attempt"
        seen: dict[str, str] = {}       # member -> what this call last saw from it (REFUSED, ...)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._no_leader(seen) or Timeout(f"no answer within the deadline (last: {last})")
            try:
                conn = await self._connection(deadline)
                try:
                    reply = await self._await_reply(conn, conn.request(build), deadline)
                except ConnectionError as exc:
                    self._drop(conn, None)
                    raise _Retry(str(exc)) from None
                if reply[0] == FRAME_ERROR:
                    self._error(conn, reply)
                return handle(conn, reply)
            except _Retry as retry:
                last = str(retry)
                if retry.member is not None and retry.outcome is not None:
                    seen[retry.member] = retry.outcome
                    if self.fail_fast and all(seen.get(a) in (REFUSED, UNRESOLVED) for a in self.addresses):
                        raise Unreachable("no member reachable: " + self._outcomes(seen)) from None
                if retry.pause:
                    await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                    pause = min(pause * 2, 0.5)

    def _outcomes(self, seen: dict[str, str]) -> str:
        """`seen` as one line, member by member in the order given: `h:p refused the connection, ...`."""
        return ", ".join(f"{a} {seen.get(a, 'was not tried')}" for a in self.addresses)

    def _no_leader(self, seen: dict[str, str]) -> Optional[NoLeader]:
        """NoLeader when every member was last seen unreachable or without a leader; else None."""
        if not seen or any(seen.get(a) in (None, REDIRECTED) for a in self.addresses):
            return None
        reachable = sum(1 for a in self.addresses if seen[a] == NO_LEADER)
        return NoLeader(f"no leader: {reachable} of {len(self.addresses)} members reachable ({self._outcomes(seen)})")

    async def _await_reply(self, conn: _Connection, fut: asyncio.Future, deadline: float) -> tuple:
        """The reply to `fut`; the member is given up on if it has sent nothing at all for attempt_timeout.

        A stopped (not dead) member keeps its socket open, so silence is the only sign. A
        busy member answering other requests is not silent: a slow request alone does not
        abandon the connection (that would re-send every request in flight on it).
        """
        since = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                fut.cancel()
                raise Timeout(f"no answer from {conn.address} within the deadline")
            try:
                return await asyncio.wait_for(asyncio.shield(fut), min(deadline - now, self.attempt_timeout / 4))
            except asyncio.TimeoutError:
                pass
            except asyncio.CancelledError:
                fut.cancel()          # the caller gave up: no one will read the reply, nor a "client closed"
                raise
            if time.monotonic() - max(conn.last_heard, since) > self.attempt_timeout:
                self._drop(conn, None)
                raise _Retry(f"{conn.address} has been silent for {self.attempt_timeout:g}s")

    def _error(self, conn: _Connection, reply: tuple) -> None:
        """Turn an error frame into a retry (redirect, shutting down) or an exception."""
        _, _rid, code, leader_id, address, message = reply
        if code == ERR_NOT_LEADER:
            conn.is_leader = False
            if address and address != conn.address:
                self._drop(conn, address, now=False)
                raise _Retry(f"redirected to node {leader_id} at {address}", pause=False, member=conn.address,
                             outcome=REDIRECTED)
            self._drop(conn, None, now=False)      # no leader known yet: try the next member
            raise _Retry(f"{conn.address}: {message or 'no leader'}", member=conn.address, outcome=NO_LEADER)
        if code == ERR_SHUTTING_DOWN:
            self._drop(conn, None, now=False)
            raise _Retry(f"{conn.address} is shutting down")
        if code == ERR_TIMEOUT:
            raise Timeout(f"{conn.address}: {message}")
        if code in (ERR_TOO_LARGE, ERR_BAD_REQUEST):
            raise RequestRejected(code, f"{conn.address}: {message}")
        if code == ERR_COMPACTED:
            raise Compacted(leader_id - 1, leader_id)    # the read's own start: see _read_once
        if code == ERR_SESSION_EXPIRED:
            raise SessionExpired(f"{conn.address}: {message}; the request's outcome is unknown")
        if code == ERR_REMOVED:
            self._follow_members(conn, leader_id, address, message)
        raise RaftlogError(f"{conn.address}: error {code}: {message}")

    def _follow_members(self, conn: _Connection, node_id: int, members_spec: str, message: str) -> None:
        """ERR_REMOVED: go to a current member (the error names them, nothing was done); Removed when none is known.

        The request was refused before anything was proposed, so sending it again elsewhere
        cannot duplicate it.
        """
        try:
            members = parse_peers(members_spec) if members_spec else {}
        except PeerSpecError:
            members = {}
        elsewhere = [a for a in members.values() if a != conn.address]
        if not elsewhere:
            raise Removed(node_id, members)
        self._drop(conn, elsewhere[0], now=False)
        raise _Retry(f"{conn.address}: {message}; trying node at {elsewhere[0]}", pause=False)

    # -- the API ----------------------------------------------------------------------------
    async def append(self, data: bytes) -> int:
        """Append one payload; its index once committed and durable on a majority."""
        return (await self.append_many([data]))[0]

    async def append_many(self, items: Iterable[bytes]) -> list[int]:
        """Append payloads (pipelined, in requests of bounded size); their indexes, in order."""
        payloads = [bytes(p) for p in items]
        if not payloads:
            return []
        chunks: list[tuple[int, int]] = []      # [lo, hi) into payloads
        lo = size = 0
        for i, p in enumerate(payloads):
            if i > lo and (size + len(p) > REQUEST_BYTES or i - lo >= REQUEST_COUNT):
                chunks.append((lo, i))
                lo, size = i, 0
            size += len(p) + 17
        chunks.append((lo, len(payloads)))
        window = asyncio.Semaphore(MAX_IN_FLIGHT)
        out: list[int] = [0] * len(payloads)

        async def one(lo: int, hi: int) -> None:
            records = RecordBatch.encode(0, KIND_DATA, payloads[lo:hi])
            async with window:
                if not self.sessions:
                    first = await self._call(lambda rid: encode_append(rid, records), self._appended)
                else:
                    first = await self._session_append(records)
            out[lo:hi] = range(first, first + hi - lo)

        if len(chunks) == 1:
            await one(*chunks[0])
        else:
            await asyncio.gather(*(one(lo, hi) for lo, hi in chunks))
        return out

    async def _session_append(self, records: RecordBatch) -> int:
        """One request under this client's session: every retry carries the same (session, seq)."""
        from raftlog.core.sessions import encode_header
        self._seq += 1
        seq = self._seq
        self._unanswered.add(seq)
        floor = min(self._unanswered)
        head = RecordBatch.encode(0, KIND_SESSION, [encode_header(self.session_id, seq, floor, len(records))])
        batch = RecordBatch.concat([head, records])
        session = self.session_id
        try:
            return await self._call(lambda rid: encode_append(rid, batch), self._appended)
        except SessionExpired:
            if self.session_id == session:
                # Later appends go under a fresh session (seq 1 again); this one's outcome is unknown.
                self.session_id = random.getrandbits(63) | 1
                self._seq = 0
                self._unanswered.clear()
            raise
        finally:
            self._unanswered.discard(seq)

    @staticmethod
    def _appended(conn: _Connection, reply: tuple) -> int:
        if reply[0] != FRAME_APPENDED:
            raise RaftlogError(f"unexpected reply type {reply[0]} to an append")
        conn.is_leader = True
        return reply[2]

    async def read(self, start: int = 1, *legacy: Any, stop: Optional[int] = None, limit: Optional[int] = None,
                   consistency: str = "linearizable") -> list[Entry]:
        """Committed data entries with indexes in `[start, stop)`, at most `limit` of them (None: no bound).

        The same call as RaftLog.read: `read(start, stop=None, *, limit=None)`. Until 0.3 the
        second and third positional arguments keep their old meaning, `limit` and
        `consistency` (a DeprecationWarning says so): pass `stop=`, `limit=` and
        `consistency=` by keyword, which means the same now and later.

        Compacted (with `first_index`) when `start` is below the first index the serving node keeps.

        `consistency`: "linearizable" (default) sees every append acknowledged before the read
        began (ReadIndex: the serving node confirms with a quorum first, dissertation 6.4);
        "lease" lets a leader skip that round while its lease holds (clock-drift bound);
        "stale" answers from the connected node's applied log at once.
        """
        if legacy:
            limit, consistency = _legacy_read_arguments(legacy, limit, consistency)
        if start < 1:
            raise ValueError("indexes start at 1")
        first_consistency = consistency_code(consistency)
        if self.read_from == "leader":
            await self._find_leader()
        out: list[Entry] = []
        while (limit is None or len(out) < limit) and (stop is None or start < stop):
            want = READ_ENTRIES if limit is None else min(READ_ENTRIES, limit - len(out))
            if stop is not None:
                want = min(want, stop - start)
            next_index, entries = await self._read_once(start, want, first_consistency)
            first_consistency = READ_STALE   # later chunks continue from the state the first one confirmed
            out.extend(e for e in entries if stop is None or e.index < stop)
            if next_index <= start:
                break
            start = next_index
        return out if limit is None else out[:limit]

    async def entries(self, start: int = 1, follow: bool = True, *, poll: float = 0.2) -> AsyncGenerator[Entry, None]:
        """Yield committed data entries from `start` in order; with follow, wait for new ones forever.

        The same call as RaftLog.entries. New entries are asked for every `poll` seconds once
        the end is reached; resume after a stop with `entries(last.index + 1)`.
        """
        pos = max(1, start)
        while True:
            got = await self.read(pos, limit=READ_ENTRIES)
            for entry in got:
                yield entry
            if got:
                pos = got[-1].index + 1
            elif not follow:
                return
            else:
                await asyncio.sleep(poll)

    async def wait_for_leader(self, timeout: float = 10.0) -> int:
        """The leader's id once the cluster has one; NoLeader (a Timeout) after `timeout` seconds.

        The same call as RaftLog.wait_for_leader.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = await self._call(encode_status, self._status_reply, max(0.01, deadline - time.monotonic()))
            except Timeout:
                status = {}
            if status.get("leader"):
                return int(status["leader"])
            if time.monotonic() >= deadline:
                raise NoLeader(f"no leader within {timeout:g} s")
            await asyncio.sleep(0.05)

    async def _read_once(self, start: int, max_entries: int, consistency: int = READ_STALE) -> tuple[int, list[Entry]]:
        def handle(conn: _Connection, reply: tuple) -> tuple[int, list[Entry]]:
            if reply[0] != FRAME_ENTRIES:
                raise RaftlogError(f"unexpected reply type {reply[0]} to a read")
            _, _rid, next_index, indexes, records = reply
            return next_index, [Entry(indexes[i], records.term(i), records.payload(i)) for i in range(len(indexes))]
        try:
            return await self._call(lambda rid: encode_read(rid, start, max_entries, READ_BYTES, consistency), handle)
        except Compacted as exc:
            raise Compacted(start, exc.first_index) from None

    async def _find_leader(self) -> None:
        """Move the connection to the leader if the connected member knows one (best effort)."""
        try:
            conn = await self._connection(time.monotonic() + self.timeout)
        except _Retry:
            return
        if conn.is_leader:
            return
        try:
            status = await self._status_on(conn)
        except (_Retry, Timeout, RaftlogError):
            return
        if status.get("role") == "leader":
            conn.is_leader = True
        elif status.get("leader_address") and status["leader_address"] != conn.address:
            self._drop(conn, status["leader_address"], now=False)

    async def _status_on(self, conn: _Connection) -> dict:
        request = conn.request(encode_status)
        try:
            reply = await asyncio.wait_for(asyncio.shield(request), self.timeout)
        except BaseException:
            request.cancel()          # abandoned (timeout or cancelled): no one will read its reply
            raise
        if reply[0] != FRAME_STATUS_REPLY:
            raise RaftlogError(f"unexpected reply type {reply[0]} to a status request")
        return json.loads(reply[2])

    # -- membership and leadership (issue 7; requests are handled by runtime/membership.py) ----
    async def _admin(self, body: dict, timeout: Optional[float] = None) -> tuple[int, int]:
        """Send an admin request to the leader; `(index, count)` of its Appended reply."""
        records = admin_request(body)

        def handle(conn: _Connection, reply: tuple) -> tuple[int, int]:
            if reply[0] != FRAME_APPENDED:
                raise RaftlogError(f"unexpected reply type {reply[0]} to an admin request")
            conn.is_leader = True
            return reply[2], reply[3]
        return await self._call(lambda rid: encode_append(rid, records), handle, timeout)

    async def members(self) -> list[dict]:
        """Every member as `{"id", "address", "voter", "match"}`, as the leader sees it (match: its log position)."""
        await self._find_leader()
        return list((await self.status()).get("member_table") or [])

    async def add_member(self, node_id: int, address: str, learner: bool = False) -> int:
        """Add node `node_id` at `address` (a voter, or a learner that only receives the log).

        Returns once the change is committed and complete: the index of its configuration
        entry (0 when the node already was a member so). A voter added directly counts in
        the quorum at once: prefer a learner first, then `promote` once it has caught up.
        """
        return (await self._admin({"op": "add", "id": node_id, "address": address, "learner": learner}))[0]

    async def remove_member(self, node_id: int) -> int:
        """Remove node `node_id` (voter or learner; the leader too: it hands over and steps down)."""
        return (await self._admin({"op": "remove", "id": node_id}))[0]

    async def promote(self, node_id: int, max_lag: Optional[int] = None) -> int:
        """Make learner `node_id` a voter (with max_lag: once its log is within that many entries of the leader's)."""
        body: dict = {"op": "promote", "id": node_id}
        if max_lag is not None:
            body["max_lag"] = max_lag
        return (await self._admin(body))[0]

    async def transfer_leadership(self, to_id: int) -> None:
        """Make voter `to_id` the leader (TimeoutNow); returns once it leads. Timeout if it did not take over."""
        await self._admin({"op": "transfer", "to": to_id})

    async def backup(self, path: str) -> BackupHeader:
        """Write a backup of one member's data to `path` (`raftlog backup`): the leader's, or with
        `read_from="any"` the member connected to (give one address to choose it); its header.

        The member copies its data dir live from one LMDB read transaction (compacted) and
        streams it; the file is written to `path + ".tmp"`, fsynced, and renamed to `path`, so
        `path` holds a whole backup or nothing new. The header's `index` is the member's durable
        commit index in the copy: every entry acknowledged up to it is in the backup. A lost
        connection or a refusal raises RaftlogError; no retry (run it again).
        """
        from raftlog.storage.backup_file import BackupHeader, BackupWriter   # the file format; loads LMDB
        if self.read_from == "leader":
            await self._find_leader()
        conn = await self._call(encode_status, lambda conn, _reply: conn)
        rid, frames = conn.stream(lambda rid: encode_append(rid, backup_request()))
        try:
            with BackupWriter(path) as writer:
                while True:
                    try:
                        frame = await asyncio.wait_for(frames.get(), self.timeout)
                    except asyncio.TimeoutError:
                        raise Timeout(f"backup from {conn.address}: nothing received for {self.timeout:g}s") from None
                    if isinstance(frame, Exception):
                        raise RaftlogError(f"backup from {conn.address} interrupted: {frame}")
                    if frame[0] == FRAME_ENTRIES:
                        writer.write(frame[4].payload(0))
                    elif frame[0] == FRAME_STATUS_REPLY:
                        header = BackupHeader.received(json.loads(frame[2]))
                        writer.finish(header)
                        return header
                    else:
                        _, _, code, _, _, message = frame
                        raise RaftlogError(f"backup from {conn.address} refused: {message or f'error {code}'}")
        finally:
            conn.streams.pop(rid, None)

    async def status(self) -> dict:
        """The status of the member the client is connected to (see `raftlog status`)."""
        return await self._call(encode_status, self._status_reply)

    @staticmethod
    def _status_reply(conn: _Connection, reply: tuple) -> dict:
        if reply[0] != FRAME_STATUS_REPLY:
            raise RaftlogError(f"unexpected reply type {reply[0]} to a status request")
        return json.loads(reply[2])


def _legacy_read_arguments(legacy: tuple, limit: Optional[int], consistency: str) -> tuple[Optional[int], str]:
    """(limit, consistency) from the old positional form `read(start, limit, consistency)`; warns it is deprecated."""
    if len(legacy) > 2:
        raise TypeError(f"read() takes at most 3 positional arguments ({len(legacy) + 1} given)")
    warnings.warn("Client.read(start, limit, consistency) with positional limit/consistency is deprecated: "
                  "from 0.3 the second positional argument is `stop` as in RaftLog.read; "
                  "pass limit= and consistency= by keyword", DeprecationWarning, stacklevel=3)
    limit = legacy[0]
    if len(legacy) == 2:
        consistency = legacy[1]
    return limit, consistency


async def query_status(address: str, *, cluster_id: str = "raftlog", timeout: float = 2.0, tls: Any = None,
                       secret: Optional[bytes] = None) -> Optional[dict]:
    """One member's status, or None if it does not answer within `timeout` (no retries, no redirects)."""
    client = AsyncClient([address], cluster_id=cluster_id, timeout=timeout, read_from="any", tls=tls, secret=secret)
    try:
        deadline = time.monotonic() + timeout
        conn = await client._connection(deadline)
        return await asyncio.wait_for(client._status_on(conn), max(0.01, deadline - time.monotonic()))
    except (_Retry, asyncio.TimeoutError, ConnectionError, OSError, RaftlogError, ValueError):
        return None
    finally:
        await client.close()


class Client:
    """The blocking twin of AsyncClient (same arguments and methods); runs its own event loop thread."""

    def __init__(self, addresses: Addresses, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raftlog-client", daemon=True)
        self._thread.start()
        self._timeout = options.get("timeout", 10.0)

        async def make() -> AsyncClient:
            return AsyncClient(addresses, **options)
        try:
            self._client = self._run(make())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coro.close()
            raise Closed("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            # Interrupted while waiting (Ctrl-C): cancel the request's task, so that closing the
            # client does not fail it with "client closed" and leave it pending in a stopped loop.
            future.cancel()
            raise

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def append(self, data: bytes) -> int:
        """Append one payload; its index once committed and durable on a majority."""
        return self._run(self._client.append(data))

    def append_many(self, items: Iterable[bytes]) -> list[int]:
        """Append payloads (pipelined); their indexes, in order."""
        return self._run(self._client.append_many(list(items)))

    def read(self, start: int = 1, *legacy: Any, stop: Optional[int] = None, limit: Optional[int] = None,
             consistency: str = "linearizable") -> list[Entry]:
        """Committed data entries in `[start, stop)`, at most `limit`; see AsyncClient.read (and the old form)."""
        if legacy:
            limit, consistency = _legacy_read_arguments(legacy, limit, consistency)
        return self._run(self._client.read(start, stop=stop, limit=limit, consistency=consistency))

    def entries(self, start: int = 1, follow: bool = True, *, poll: float = 0.2) -> Iterator[Entry]:
        """Like AsyncClient.entries, as a blocking generator."""
        yield from blocking_iter(self._run, self._client.entries(start, follow, poll=poll),
                                 lambda: not self._loop.is_closed())

    def wait_for_leader(self, timeout: float = 10.0) -> int:
        """The leader's id once the cluster has one; NoLeader after `timeout` seconds (see AsyncClient)."""
        return self._run(self._client.wait_for_leader(timeout))

    def status(self) -> dict:
        """The status of the member the client is connected to."""
        return self._run(self._client.status())

    def backup(self, path: str) -> BackupHeader:
        """Write a backup of one member's data to `path`; its header (see AsyncClient.backup)."""
        return self._run(self._client.backup(path))

    def members(self) -> list[dict]:
        """Every member: `{"id", "address", "voter", "match"}` (see AsyncClient.members)."""
        return self._run(self._client.members())

    def add_member(self, node_id: int, address: str, learner: bool = False) -> int:
        """Add a member (see AsyncClient.add_member)."""
        return self._run(self._client.add_member(node_id, address, learner))

    def remove_member(self, node_id: int) -> int:
        """Remove a member (see AsyncClient.remove_member)."""
        return self._run(self._client.remove_member(node_id))

    def promote(self, node_id: int, max_lag: Optional[int] = None) -> int:
        """Make a learner a voter (see AsyncClient.promote)."""
        return self._run(self._client.promote(node_id, max_lag))

    def transfer_leadership(self, to_id: int) -> None:
        """Make voter `to_id` the leader (see AsyncClient.transfer_leadership)."""
        self._run(self._client.transfer_leadership(to_id))

    def close(self) -> None:
        """Close the connection and stop the client's thread (idempotent)."""
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
