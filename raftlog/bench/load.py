"""The load of a run: client connections to the leader keeping Append requests in flight, and what they saw.

Closed loop (the default) keeps `inflight` requests of `batch` payloads in flight per
connection, which finds the throughput ceiling; open loop sends at `rate` entries/s on a
schedule, and latency runs from the scheduled send time, so a stall is not hidden by the
load backing off.

The load generator has to be cheap, since it shares the machine's cores with the nodes it
measures: payloads are encoded once at start-up into a pool of RecordBatches per
connection (distinct payloads, so verification can tell requests apart), a request costs
one `encode_append` (a memcpy of the pool batch) and one dict entry, and the requests a
connection sends after one read go out in one write. Nothing here runs per entry.
"""
from __future__ import annotations

import asyncio
import ssl
import struct
import threading
import time
from typing import Any, Callable, Optional

from raftlog.bench.config import CLUSTER_ID, BenchConfig, BenchError
from raftlog.bench.progress import Progress
from raftlog.bench.stats import Stats
from raftlog.bench.window import measure_window
from raftlog.hot import (
    DEFAULT_MAX_FRAME,
    ERR_NOT_LEADER,
    ERR_TIMEOUT,
    FRAME_APPENDED,
    FRAME_ERROR,
    FRAME_HANDSHAKE,
    KIND_DATA,
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    FrameDecoder,
    RecordBatch,
    encode_append,
    encode_handshake,
)

POOL = 64                     # distinct pre-encoded request batches per connection


def make_pool(client: int, payload: int, batch: int, pool: int) -> list[RecordBatch]:
    """`pool` request batches of `batch` payloads of `payload` bytes, every payload distinct within a client.

    A payload starts with (client, slot, position) so that verification can tell which
    request an entry came from; the rest is filler.
    """
    out = []
    filler = bytes(range(256)) * (payload // 256 + 1)
    for slot in range(pool):
        items = []
        for pos in range(batch):
            tag = struct.pack(">HHI", client & 0xFFFF, slot, pos)
            items.append((tag + filler[:max(0, payload - len(tag))])[:payload])
        out.append(RecordBatch.encode(0, KIND_DATA, items))
    return out


class LoadConnection(asyncio.Protocol):
    """One client connection that keeps requests in flight; replies are matched by request id."""

    def __init__(self, bench: "LoadDriver", client: int) -> None:
        self.bench = bench
        self.client = client
        self.pool = bench.pools[client]
        self.decoder = FrameDecoder(DEFAULT_MAX_FRAME)
        self.transport: Optional[asyncio.Transport] = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.sent: dict[int, tuple[float, int]] = {}   # request id -> (send time, pool slot)
        self.next_id = 1
        self.closed = False
        self.backlog: list[float] = []   # open loop: scheduled send times not yet sent (connection was down)
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]
        transport.write(encode_handshake(PROTOCOL_VERSION, ROLE_CLIENT, 0, CLUSTER_ID))  # type: ignore[attr-defined]

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection lost during the handshake"))
        self.bench.lost(self)

    def request(self, t_sched: float) -> None:
        """Queue one Append (written at flush()); `t_sched` is when it was (meant to be) sent."""
        rid = self.next_id
        self.next_id = rid + 1
        slot = rid % POOL
        self.sent[rid] = (t_sched, slot)
        self._out.append(encode_append(rid, self.pool[slot]))

    def flush(self) -> None:
        """Write every queued request in one write."""
        out = self._out
        if out and self.transport is not None and not self.closed:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        self._out = []

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except Exception as exc:
            self.bench.fail(f"bad frame from the leader: {exc}")
            return
        bench = self.bench
        stats = bench.stats
        now = time.perf_counter()
        answered = 0
        for frame in frames:
            ftype = frame[0]
            if ftype == FRAME_APPENDED:
                t_sched, slot = self.sent.pop(frame[1])
                count = frame[3]
                stats.total_entries += count
                stats.total_requests += 1
                stats.acks.append((frame[2], self.client, slot))
                if stats.measuring:
                    stats.entries += count
                    stats.requests += 1
                    stats.latencies.append(now - t_sched)
                answered += 1
            elif ftype == FRAME_HANDSHAKE:
                if not self.ready.done():
                    self.ready.set_result(None)
            elif ftype == FRAME_ERROR:
                _, rid, code, _leader_id, address, message = frame
                if rid == 0:
                    bench.fail(f"the node refused the connection: {message}")
                    return
                self.sent.pop(rid, None)
                stats.errors += 1
                if code == ERR_TIMEOUT:
                    stats.timeouts += 1
                answered += 1
                if code == ERR_NOT_LEADER:
                    bench.redirect(address)
        if answered:
            bench.on_answers(self, answered)
        self.flush()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class LoadDriver:
    """Runs the load against the cluster from this process's event loop."""

    def __init__(self, cfg: BenchConfig, addresses: dict[int, str], progress: Optional[Progress] = None, *,
                 ssl_context: Optional[ssl.SSLContext] = None, security: Optional[dict[str, Any]] = None) -> None:
        self.cfg = cfg
        self.addresses = addresses
        self.progress = progress or Progress()
        self.ssl_context = ssl_context          # TLS for the load connections (None: plain TCP)
        self.security = security or {}          # keyword arguments of status queries (tls=...)
        self.stats = Stats()
        self.pools = [make_pool(c, cfg.payload, cfg.batch, POOL) for c in range(cfg.clients)]
        self.conns: list[Optional[LoadConnection]] = [None] * cfg.clients
        self.leader_address = ""
        self.failure: Optional[str] = None
        self.done = False
        self._reconnecting: set[int] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    async def connect(self, client: int) -> LoadConnection:
        assert self._loop is not None
        host, port = self.leader_address.rsplit(":", 1)
        _, conn = await self._loop.create_connection(lambda: LoadConnection(self, client), host, int(port),
                                                     ssl=self.ssl_context)
        await asyncio.wait_for(conn.ready, 5.0)
        self.conns[client] = conn
        return conn

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason

    def redirect(self, address: str) -> None:
        """A not-leader answer: aim new connections at `address` (the current ones are replaced)."""
        self.stats.redirects += 1
        if address and address != self.leader_address:
            self.leader_address = address
            for conn in self.conns:
                if conn is not None:
                    conn.close()

    def lost(self, conn: LoadConnection) -> None:
        """A connection went away (redirect, node failure): reconnect in the background and resume."""
        if self.done or self.conns[conn.client] is not conn:
            return
        self.conns[conn.client] = None
        if conn.client not in self._reconnecting and self._loop is not None:
            self._reconnecting.add(conn.client)
            self._loop.create_task(self._reconnect(conn.client, len(conn.sent) + len(conn.backlog)))

    async def _reconnect(self, client: int, owed: int) -> None:
        from raftlog.client import query_status
        try:
            for _ in range(200):
                if self.done:
                    return
                try:
                    conn = await self.connect(client)
                except (OSError, asyncio.TimeoutError, ConnectionError):
                    await asyncio.sleep(0.05)
                    for address in self.addresses.values():
                        st = await query_status(address, cluster_id=CLUSTER_ID, timeout=0.5, **self.security)
                        if st and st.get("leader_address"):
                            self.leader_address = st["leader_address"]
                            break
                    continue
                if self.cfg.rate is None:
                    for _ in range(max(owed, self.cfg.inflight)):
                        conn.request(time.perf_counter())
                    conn.flush()
                return
            self.fail("could not reconnect to a leader")
        finally:
            self._reconnecting.discard(client)

    def on_answers(self, conn: LoadConnection, answered: int) -> None:
        """Closed loop: every answer is replaced by a new request, until the run is over."""
        if self.cfg.rate is None and not self.done:
            now = time.perf_counter()
            for _ in range(answered):
                conn.request(now)

    async def run(self, leader_address: str, warmup: float, on_start: Callable[[], None] = lambda: None,
                  on_end: Callable[[], None] = lambda: None) -> float:
        """Drive load: warm-up, then the measured window (`on_start()`, `on_end()` as it opens and closes); its
        length in seconds."""
        self._loop = asyncio.get_running_loop()
        self.leader_address = leader_address
        cfg = self.cfg
        for c in range(cfg.clients):
            await self.connect(c)
        if cfg.rate is None:
            now = time.perf_counter()
            for conn in self.conns:
                assert conn is not None
                for _ in range(cfg.inflight):
                    conn.request(now)
                conn.flush()
            sender = None
        else:
            sender = self._loop.create_task(self._open_loop())
        try:
            seconds = await measure_window(cfg, self.stats, self.progress, warmup=warmup, check=self._check,
                                           on_start=on_start, on_end=on_end)
        finally:
            self.done = True
            if sender is not None:
                sender.cancel()
        await self._drain()
        return seconds

    def _check(self) -> None:
        """BenchError when the load failed (a refused connection, no leader to reconnect to)."""
        if self.failure is not None:
            raise BenchError(self.failure)

    async def _open_loop(self) -> None:
        """Send `rate` entries/s as requests of `batch`, on schedule, round-robin over the connections.

        A thread keeps the schedule: time.sleep wakes within ~0.1 ms of a due time, while an
        asyncio timer here woke 1.3 ms late at the median and 2.3 ms at p99 (epoll's timeout
        is in whole milliseconds, rounded up); that lateness was counted as raftlog's latency.
        Each request's latency still runs from its scheduled time, so a late send is charged.
        """
        cfg = self.cfg
        assert cfg.rate is not None and self._loop is not None
        interval = cfg.batch / cfg.rate          # seconds between requests
        loop = self._loop
        t0 = time.perf_counter()
        sent = 0                                 # requests scheduled so far
        stop = threading.Event()

        def send_due() -> None:
            nonlocal sent
            due = int((time.perf_counter() - t0) / interval) + 1
            while sent < due and not self.done:
                conn = self.conns[sent % cfg.clients]
                if conn is not None:     # None: reconnecting; the request is lost (counted as not sent)
                    conn.request(t0 + sent * interval)
                sent += 1
            for conn in self.conns:
                if conn is not None:
                    conn.flush()

        def keep_time() -> None:
            seq = 0
            while not stop.is_set():
                delay = t0 + seq * interval - time.perf_counter()
                if delay > 0.05:
                    stop.wait(delay)         # long gaps: wake at once when the run ends
                elif delay > 0:
                    time.sleep(delay)        # short ones: clock_nanosleep, ~0.1 ms late at most
                try:
                    loop.call_soon_threadsafe(send_due)
                except RuntimeError:         # the loop is closed: the run is over
                    return
                seq = max(seq + 1, int((time.perf_counter() - t0) / interval) + 1)

        ticker = threading.Thread(target=keep_time, name="raftlog-bench-schedule", daemon=True)
        ticker.start()
        try:
            while not self.done:
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            ticker.join()

    async def _drain(self) -> None:
        """Let the requests in flight be answered (so their acks are verified too), then close."""
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and any(c is not None and c.sent and not c.closed for c in self.conns):
            await asyncio.sleep(0.02)
        for conn in self.conns:
            if conn is not None:
                unanswered = len(conn.sent)        # given up on: counted as timed out
                self.stats.errors += unanswered
                self.stats.timeouts += unanswered
                conn.close()
