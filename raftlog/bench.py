"""`raftlog bench`: throughput and latency of a local cluster of real `raftlog node` processes.

What one run does:

1. starts N `raftlog node` processes on loopback ports that were free a moment before, in a
   temporary data dir (or `--data DIR`), and waits until they agree on a leader;
2. drives load from this process: `clients` TCP connections to the leader, each keeping
   `inflight` Append requests of `batch` payloads in flight (closed loop, the default, which
   finds the throughput ceiling), or sending at `rate` entries/s on a schedule (open loop:
   latency is measured from the scheduled send time, so a stall is not hidden by the load
   backing off);
3. reports committed entries/s, MB/s, latency percentiles (per request, from send to the
   Appended reply, which the leader sends once the entries are committed and durable),
   elections during the run (terms started), CPU seconds and peak RSS of each node process;
4. verifies: waits for every follower to catch up, stops the nodes, opens every data dir
   read-only and checks that the logs are byte-identical over the committed range and that
   every acknowledged request's payloads sit at the indexes its reply named;
5. cleans up: every node process is stopped (SIGTERM, then SIGKILL) whatever happened,
   also on Ctrl-C, and the temporary data dir is removed unless `--keep`.

The load generator has to be cheap, since it shares the machine's cores with the nodes it
measures: payloads are encoded once at start-up into a pool of RecordBatches per
connection (distinct payloads, so verification can tell requests apart), a request costs
one `encode_append` (a memcpy of the pool batch) and one dict entry, and the requests a
connection sends after one read go out in one write. Nothing here runs per entry.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from raftlog.hot import (
    DEFAULT_MAX_FRAME,
    ERR_NOT_LEADER,
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

CLUSTER_ID = "raftlog-bench"
POOL = 64                     # distinct pre-encoded request batches per connection
STARTUP_TIMEOUT = 30.0        # seconds for the nodes to start and elect a leader
CATCHUP_TIMEOUT = 30.0        # seconds for followers to apply everything before verifying
GRACE_SECONDS = 5.0           # SIGTERM -> SIGKILL
SAMPLE_SECONDS = 0.25         # progress and RSS sampling period
MAX_REQUEST_BYTES = 4 << 20   # the service's limit on one Append (runtime/server.py)


@dataclass
class BenchConfig:
    """One run's settings (the options of `raftlog bench`)."""

    nodes: int = 3
    payload: int = 100
    duration: float = 10.0
    count: Optional[int] = None     # stop after this many committed entries instead of `duration`
    clients: int = 4
    inflight: int = 4
    batch: int = 512
    rate: Optional[float] = None    # open loop: offered entries/s
    sync: bool = True
    impl: str = "cython"
    data: Optional[str] = None
    keep: bool = False
    warmup: float = 1.0             # seconds of load before measuring (duration mode)
    tls: bool = False               # mutual TLS on every connection (a throw-away CA made for the run)


# During a --tls run: the client side's TLS settings, for status queries and load connections.
_SECURITY: dict = {}
_SSL_CONTEXT: list = [None]


@dataclass
class NodeProc:
    """One node process and what was measured about it."""

    node_id: int
    address: str
    data_dir: str
    log_path: str
    proc: subprocess.Popen
    cpu_start: float = 0.0
    cpu_s: float = 0.0
    rss_mb: float = 0.0
    rss_samples: list[float] = field(default_factory=list)


class BenchError(Exception):
    """The run could not be completed (a node failed, no leader, ...)."""


# ---------------------------------------------------------------- /proc readings

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of process `pid` in MiB, from /proc (0 when it is gone)."""
    rss = hwm = 0.0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss, hwm


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports that are free right now (held open together while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of an ascending list, nearest-rank (0 for an empty list)."""
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


# ---------------------------------------------------------------- the cluster

class Cluster:
    """N `raftlog node` processes in their own sessions; `stop()` always leaves none behind."""

    def __init__(self, cfg: BenchConfig, root: str) -> None:
        self.cfg = cfg
        self.root = root
        self.nodes: dict[int, NodeProc] = {}
        self.peers = ""

    def start(self) -> None:
        """Start every node (each logging to DIR/nodeI.log)."""
        from raftlog.runtime.cluster import _die_with_parent, node_command
        ports = free_ports(self.cfg.nodes)
        addresses = {i: f"127.0.0.1:{ports[i - 1]}" for i in range(1, self.cfg.nodes + 1)}
        self.peers = ",".join(f"{i}={a}" for i, a in addresses.items())
        env = dict(os.environ)
        env.pop("RAFTLOG_PURE", None)
        env.pop("RAFTLOG_REQUIRE_CYTHON", None)
        if self.cfg.impl == "python":
            env["RAFTLOG_PURE"] = "1"
        else:
            env["RAFTLOG_REQUIRE_CYTHON"] = "1"
        for i, address in addresses.items():
            data_dir = os.path.join(self.root, f"node{i}")
            log_path = os.path.join(self.root, f"node{i}.log")
            cmd = node_command(i, self.peers, data_dir, cluster_id=CLUSTER_ID, sync=self.cfg.sync)
            if self.cfg.tls:
                if not _SECURITY:
                    from raftlog.runtime.tls import make_dev_pki
                    self.tls_node, _SECURITY["tls"] = make_dev_pki(os.path.join(self.root, "pki"))
                    _SSL_CONTEXT[0] = _SECURITY["tls"].client_context()
                cmd += ["--tls-cert", self.tls_node.cert, "--tls-key", self.tls_node.key, "--tls-ca", self.tls_node.ca]
            with open(log_path, "wb") as logf:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True, preexec_fn=_die_with_parent)
            self.nodes[i] = NodeProc(i, address, data_dir, log_path, proc)

    def check_alive(self) -> None:
        """BenchError naming the first node process that has exited, with the end of its log."""
        for n in self.nodes.values():
            code = n.proc.poll()
            if code is not None:
                raise BenchError(f"node {n.node_id} exited with status {code}:\n{tail(n.log_path)}")

    def sample(self) -> None:
        """Record every node's current RSS (for the flatness check) and peak RSS."""
        for n in self.nodes.values():
            rss, hwm = memory_mb(n.proc.pid)
            if rss:
                n.rss_samples.append(rss)
            n.rss_mb = max(n.rss_mb, hwm)

    def mark_cpu(self) -> None:
        """Start of the measured window for CPU seconds."""
        for n in self.nodes.values():
            n.cpu_start = cpu_seconds(n.proc.pid)

    def read_cpu(self) -> None:
        """End of the measured window for CPU seconds."""
        for n in self.nodes.values():
            n.cpu_s = max(0.0, cpu_seconds(n.proc.pid) - n.cpu_start)

    def stop(self) -> None:
        """SIGTERM every node (a clean shutdown flushes its last hard state), SIGKILL after the grace period."""
        for n in self.nodes.values():
            if n.proc.poll() is None:
                try:
                    n.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + GRACE_SECONDS
        for n in self.nodes.values():
            try:
                n.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()


def tail(path: str, lines: int = 15) -> str:
    """The last lines of a text file ('' if unreadable)."""
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except OSError:
        return ""


# ---------------------------------------------------------------- load

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


class Stats:
    """What the load saw: acknowledged requests, latencies, errors."""

    def __init__(self) -> None:
        self.measuring = False
        self.entries = 0            # acknowledged entries while measuring
        self.total_entries = 0      # acknowledged entries, warm-up included
        self.latencies = array("d")  # seconds, one per request acknowledged while measuring
        self.acks: list[tuple[int, int, int]] = []   # (first_index, client, slot) of every ack
        self.errors = 0
        self.redirects = 0


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
                stats.acks.append((frame[2], self.client, slot))
                if stats.measuring:
                    stats.entries += count
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

    def __init__(self, cfg: BenchConfig, addresses: dict[int, str], on_progress: Callable[[int, int], None]) -> None:
        self.cfg = cfg
        self.addresses = addresses
        self.on_progress = on_progress
        self.stats = Stats()
        self.pools = [make_pool(c, cfg.payload, cfg.batch, POOL) for c in range(cfg.clients)]
        self.conns: list[Optional[LoadConnection]] = [None] * cfg.clients
        self.leader_address = ""
        self.failure: Optional[str] = None
        self.done = False
        self._reconnecting: set[int] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    # -- connections ------------------------------------------------------------------------
    async def connect(self, client: int) -> LoadConnection:
        assert self._loop is not None
        host, port = self.leader_address.rsplit(":", 1)
        _, conn = await self._loop.create_connection(lambda: LoadConnection(self, client), host, int(port),
                                                     ssl=_SSL_CONTEXT[0])
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
        from raftlog.runtime.client import query_status
        try:
            for _ in range(200):
                if self.done:
                    return
                try:
                    conn = await self.connect(client)
                except (OSError, asyncio.TimeoutError, ConnectionError):
                    await asyncio.sleep(0.05)
                    for address in self.addresses.values():
                        st = await query_status(address, cluster_id=CLUSTER_ID, timeout=0.5, **_SECURITY)
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

    # -- the run ----------------------------------------------------------------------------
    async def run(self, leader_address: str, warmup: float) -> float:
        """Drive load: warm-up, then the measured window; returns the window's length in seconds."""
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
            if warmup > 0:
                await self._wait(warmup, None)
            self.stats.measuring = True
            self.on_progress(-1, 0)   # the measured window starts
            t0 = time.perf_counter()
            await self._wait(cfg.duration if cfg.count is None else None, cfg.count)
            seconds = time.perf_counter() - t0
            self.stats.measuring = False
        finally:
            self.done = True
            if sender is not None:
                sender.cancel()
        await self._drain()
        return seconds

    async def _wait(self, seconds: Optional[float], count: Optional[int]) -> None:
        start = time.perf_counter()
        last = 0
        while True:
            await asyncio.sleep(SAMPLE_SECONDS if seconds is None else min(SAMPLE_SECONDS, seconds / 4))
            if self.failure is not None:
                raise BenchError(self.failure)
            stats = self.stats
            shown = stats.entries if stats.measuring else stats.total_entries
            self.on_progress(shown - last, shown)
            last = shown
            if seconds is not None and time.perf_counter() - start >= seconds:
                return
            if count is not None and stats.entries >= count:
                return

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
                conn.close()


# ---------------------------------------------------------------- cluster state over the wire

async def statuses(addresses: dict[int, str]) -> dict[int, Optional[dict]]:
    """Every member's status (None for one that does not answer)."""
    from raftlog.runtime.client import query_status
    got = await asyncio.gather(*(query_status(a, cluster_id=CLUSTER_ID, timeout=1.0, **_SECURITY)
                                 for a in addresses.values()))
    return dict(zip(addresses, got))


async def wait_for_leader(cluster: Cluster, addresses: dict[int, str], timeout: float) -> tuple[int, int]:
    """(leader id, term) once every member follows one leader that is connected to all of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.check_alive()
        st = await statuses(addresses)
        if all(s is not None for s in st.values()):
            leaders = {s["leader"] for s in st.values()}  # type: ignore[index]
            if len(leaders) == 1 and None not in leaders:
                lead = leaders.pop()
                ls = st[lead]
                assert ls is not None
                if ls["role"] == "leader" and set(ls["connected"]) >= set(addresses) - {lead}:
                    return lead, max(s["term"] for s in st.values())  # type: ignore[index]
        await asyncio.sleep(0.05)
    raise BenchError(f"no leader within {timeout:g} s")


async def wait_caught_up(addresses: dict[int, str], timeout: float) -> dict[int, Optional[dict]]:
    """Wait until every member has applied the leader's commit index; the last statuses seen."""
    deadline = time.monotonic() + timeout
    st: dict[int, Optional[dict]] = {}
    while time.monotonic() < deadline:
        st = await statuses(addresses)
        alive = [s for s in st.values() if s is not None]
        if len(alive) == len(addresses):
            commit = max(s["commit"] for s in alive)
            if all(s["applied"] >= commit for s in alive):
                return st
        await asyncio.sleep(0.05)
    return st


# ---------------------------------------------------------------- verification

def verify(cluster: Cluster, stats: Stats, pools: list[list[RecordBatch]], chunk: int = 1 << 15) -> tuple[bool, str]:
    """Offline, after the nodes stopped: logs identical over the committed range, every ack's payloads in place.

    The committed range is `[1, C]` with C the highest commit index any node saved; every
    node must hold it. Records are compared as stored bytes (term, kind, CRC and payload);
    an acknowledged request must hold its pool batch's payloads, restamped with the term
    found there, at `[first_index, first_index + count)`.
    """
    from raftlog.storage.lmdb import LmdbStorage
    stores = {}
    try:
        for i, n in cluster.nodes.items():
            stores[i] = LmdbStorage.open(n.data_dir, node_id=None, cluster_id=None, readonly=True)
        commit = max(s.hard_state().commit for s in stores.values())
        for i, s in stores.items():
            if s.last_index() < commit:
                return False, f"node {i} holds entries up to {s.last_index()}, the commit index is {commit}"
        ref_id = max(stores, key=lambda i: stores[i].hard_state().commit)
        ref = stores[ref_id]
        acks = sorted(stats.acks)
        k = 0
        prev_end = 0
        lo = 1
        while lo <= commit:
            hi = min(commit + 1, lo + chunk)
            batch = ref.records(lo, hi)
            hi = lo + len(batch)
            buf = bytes(batch.buffer)
            for i, s in stores.items():
                if i != ref_id and bytes(s.records(lo, hi).buffer) != buf:
                    return False, f"node {i} differs from node {ref_id} in [{lo}, {hi})"
            while k < len(acks) and acks[k][0] < hi:
                first, client, slot = acks[k]
                want = pools[client][slot]
                n = len(want)
                if first < prev_end:
                    return False, f"two acknowledged requests overlap at index {first}"
                if first + n - 1 > commit:
                    return False, f"acknowledged entries [{first}, {first + n}) beyond the commit index {commit}"
                if first < lo or first + n > hi:
                    got = ref.records(first, first + n)   # straddles a chunk: read it alone
                else:
                    got = batch.slice(first - lo, first - lo + n)
                if len(got) != n or bytes(got.buffer) != bytes(want.restamp(got.term(0)).buffer):
                    return False, f"the request acknowledged at index {first} is not what the log holds there"
                prev_end = first + n
                k += 1
            lo = hi
        if k != len(acks):
            return False, f"{len(acks) - k} acknowledged requests lie beyond the commit index {commit}"
        return True, f"logs of {len(stores)} nodes identical over [1, {commit}]; {len(acks)} acknowledged requests in place"
    finally:
        for s in stores.values():
            s.close()


# ---------------------------------------------------------------- the whole run

def run_bench(cfg: BenchConfig, *, progress: Optional[Callable[[int, int], None]] = None,
              note: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run one benchmark (see the module docstring); the JSON summary, with `verified` and a `detail`."""
    if cfg.batch * (cfg.payload + 17) > MAX_REQUEST_BYTES:
        raise ValueError(f"--batch {cfg.batch} of {cfg.payload} B payloads exceeds one request's "
                         f"{MAX_REQUEST_BYTES} B limit")
    created = cfg.data is None
    if cfg.data is None:
        root = tempfile.mkdtemp(prefix="raftlog-bench-")
    else:
        root = os.path.abspath(cfg.data)
        os.makedirs(root, exist_ok=True)
        if os.listdir(root):
            raise ValueError(f"--data {cfg.data}: not empty")
    cluster = Cluster(cfg, root)
    driver: Optional[LoadDriver] = None
    try:
        cluster.start()
        addresses = {i: n.address for i, n in cluster.nodes.items()}
        driver = LoadDriver(cfg, addresses, progress or (lambda d, t: None))
        result = asyncio.run(_drive(cfg, cluster, addresses, driver, note))
        cluster.stop()
        ok, detail = verify(cluster, driver.stats, driver.pools)
        result["verified"] = ok
        result["detail"] = detail
        return result
    finally:
        cluster.stop()
        _SECURITY.clear()
        _SSL_CONTEXT[0] = None
        if created and not cfg.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif not cfg.keep:
            for n in cluster.nodes.values():
                shutil.rmtree(n.data_dir, ignore_errors=True)
                try:
                    os.unlink(n.log_path)
                except OSError:
                    pass
        if cfg.keep:
            note(f"data kept in {root}")


async def _drive(cfg: BenchConfig, cluster: Cluster, addresses: dict[int, str], driver: LoadDriver,
                 note: Callable[[str], None]) -> dict[str, Any]:
    leader, term0 = await wait_for_leader(cluster, addresses, STARTUP_TIMEOUT)
    note(f"{cfg.nodes} nodes up, node {leader} leads; load: {cfg.clients} clients x {cfg.inflight} in flight x "
         f"{cfg.batch} payloads of {cfg.payload} B" + (f", open loop at {cfg.rate:,.0f} entries/s" if cfg.rate else ""))
    sampling = True

    async def sampler() -> None:
        while sampling:
            cluster.sample()
            cluster.check_alive()
            await asyncio.sleep(SAMPLE_SECONDS)

    sampler_task = asyncio.get_running_loop().create_task(sampler())
    warmup = cfg.warmup if cfg.count is None else 0.0
    orig = driver.on_progress

    def mark(delta: int, total: int) -> None:
        if delta == -1:
            cluster.mark_cpu()
            return
        orig(delta, total)

    driver.on_progress = mark
    try:
        seconds = await driver.run(addresses[leader], warmup)
        cluster.read_cpu()
    finally:
        sampling = False
        await sampler_task
    cluster.sample()
    st = await statuses(addresses)
    term1 = max([s["term"] for s in st.values() if s is not None] or [term0])
    await wait_caught_up(addresses, CATCHUP_TIMEOUT)
    stats = driver.stats
    lat = sorted(stats.latencies)
    ms = 1000.0
    entries = stats.entries
    return {
        "nodes": cfg.nodes, "payload": cfg.payload, "sync": cfg.sync, "impl": cfg.impl,
        "clients": cfg.clients, "inflight": cfg.inflight, "batch": cfg.batch, "rate": cfg.rate,
        "entries": entries, "seconds": round(seconds, 3),
        "entries_per_s": round(entries / seconds, 1) if seconds > 0 else 0.0,
        "mb_per_s": round(entries * cfg.payload / seconds / 1e6, 3) if seconds > 0 else 0.0,
        "latency_ms": {"p50": round(percentile(lat, 0.50) * ms, 3), "p90": round(percentile(lat, 0.90) * ms, 3),
                       "p99": round(percentile(lat, 0.99) * ms, 3), "p999": round(percentile(lat, 0.999) * ms, 3),
                       "max": round((lat[-1] if lat else 0.0) * ms, 3)},
        "elections": term1 - term0,
        "verified": False,
        "per_node": [{"id": n.node_id, "cpu_s": round(n.cpu_s, 2), "rss_mb": round(n.rss_mb, 1)}
                     for n in cluster.nodes.values()],
        "errors": stats.errors,
        "rss_flat": {n.node_id: _flatness(n.rss_samples) for n in cluster.nodes.values()},
    }


def _flatness(samples: list[float]) -> tuple[float, float]:
    """(RSS after the first third of the run, RSS at the end), MiB."""
    if not samples:
        return (0.0, 0.0)
    return (round(samples[len(samples) // 3], 1), round(samples[-1], 1))


JSON_KEYS = ("nodes", "payload", "sync", "impl", "clients", "inflight", "batch", "rate", "entries", "seconds",
             "entries_per_s", "mb_per_s", "latency_ms", "elections", "verified", "per_node")


def public_json(result: dict[str, Any]) -> dict[str, Any]:
    """The documented `--json` object: exactly JSON_KEYS."""
    return {k: result[k] for k in JSON_KEYS}


def format_summary(r: dict[str, Any]) -> str:
    """The human summary of a run."""
    lat = r["latency_ms"]
    load = (f"open loop at {r['rate']:,.0f} entries/s" if r["rate"] else
            f"closed loop, {r['clients']} clients x {r['inflight']} requests in flight")
    lines = [
        f"raftlog bench: {r['nodes']} nodes, {r['payload']} B payloads, fsync {'on' if r['sync'] else 'off'}, "
        f"{r['impl']} hot path",
        f"load:       {load}, {r['batch']} payloads per request",
        f"committed:  {r['entries']:,} entries in {r['seconds']:.2f} s = {r['entries_per_s']:,.0f} entries/s, "
        f"{r['mb_per_s']:.2f} MB/s",
        f"latency:    p50 {lat['p50']:.3f} ms  p90 {lat['p90']:.3f} ms  p99 {lat['p99']:.3f} ms  "
        f"p99.9 {lat['p999']:.3f} ms  max {lat['max']:.3f} ms (per request, until committed)",
        f"elections:  {r['elections']} during the run" + (f"; {r['errors']} requests refused" if r.get("errors") else ""),
    ]
    flat = r.get("rss_flat", {})
    for n in r["per_node"]:
        mid, end = flat.get(n["id"], (0.0, 0.0))
        lines.append(f"node {n['id']}:     {n['cpu_s']:.2f} CPU s, peak RSS {n['rss_mb']:.1f} MiB "
                     f"(RSS {mid:.1f} MiB a third of the way in, {end:.1f} MiB at the end)")
    lines.append(f"verified:   {'yes' if r['verified'] else 'NO'}: {r.get('detail', '')}")
    return "\n".join(lines)


def main_with_signals(fn: Callable[[], Any]) -> Any:
    """Run fn with SIGTERM turned into KeyboardInterrupt, so cleanup runs on either."""
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, on_term)
    try:
        return fn()
    finally:
        signal.signal(signal.SIGTERM, old)




class LiveRate:
    """The progress callback for a click progress bar: live entries/s as its label.

    Duration mode: the bar fills with the measured window's time (tenths of a second);
    count mode: with committed entries. Called by the driver every SAMPLE_SECONDS with
    (new entries, entries so far in this phase); (-1, 0) marks the start of the window.
    """

    def __init__(self, bar: Any, count: Optional[int]) -> None:
        self.bar = bar
        self.count = count
        self.t0: Optional[float] = None
        self.last_t = time.perf_counter()
        self.last_n = 0
        bar.label = "warm-up"

    def __call__(self, delta: int, total: int) -> None:
        now = time.perf_counter()
        if delta == -1:
            self.t0 = now
            self.last_t, self.last_n = now, 0
            return
        if now - self.last_t >= 0.5:
            rate = (total - self.last_n) / (now - self.last_t)
            self.last_t, self.last_n = now, total
            self.bar.label = f"{rate:>9,.0f} entries/s" if self.t0 is not None else f"warm-up {rate:,.0f} entries/s"
        bar = self.bar
        if self.t0 is None:
            bar.update(0)
        elif self.count is not None:
            bar.update(max(0, min(total, self.count) - bar.pos))
        else:
            bar.update(max(0, min(bar.length, int((now - self.t0) * 10)) - bar.pos))

__all__ = ["BenchConfig", "BenchError", "LiveRate", "run_bench", "public_json", "format_summary", "JSON_KEYS", "asdict"]
