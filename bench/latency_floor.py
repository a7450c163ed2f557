"""The latency floor of durable 3-way replication on this machine, with no Raft in the way.

What one append must wait for in any design that acknowledges only after a quorum has the
entry on disk: client -> leader, leader -> follower, the follower's durable write, follower
-> leader, the leader's own durable write (overlapped), leader -> client. This script runs
exactly that and nothing else: three processes on loopback speaking length-prefixed frames
over asyncio (like raftlog's nodes), each storing the 100-byte payload, and one client with
one request in flight. The leader forwards first, then writes (on its loop thread, or with
`--leader-write thread` on a writer thread as raftlog does for large batches), and answers
once two of the three copies are durable.

    python bench/latency_floor.py                 # every store, 3000 requests each
    python bench/latency_floor.py --store lmdb --count 10000

Stores: `none` (nothing written: the network and the event loops alone), `fdatasync` (an
append to a plain file and one fdatasync), `prealloc` (an overwrite inside a file written
full of zeros beforehand, then one fdatasync: the cheapest durable write a log file can
have, since neither its size nor its extents change), `lmdb` (one LMDB write transaction,
committed with fsync as raftlog's storage does: LMDB syncs its data pages and then its meta
page, two flushes). The gap between `prealloc` and `lmdb` is what LMDB's two-flush commit costs; the
gap between the floor and `raftlog bench --clients 1 --inflight 1 --batch 1` is what
raftlog's own code costs.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from raftlog.runtime.launcher import free_ports

_LEN = struct.Struct(">I")
STORES = ("none", "fdatasync", "prealloc", "lmdb")
PREALLOC_BYTES = 64 << 20


def make_store(kind: str, path: str) -> Callable[[bytes], None]:
    """A function that makes one payload durable in the chosen way."""
    if kind == "none":
        return lambda payload: None
    if kind == "fdatasync":
        fd = os.open(os.path.join(path, "wal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

        def append_and_sync(payload: bytes) -> None:
            os.write(fd, payload)
            os.fdatasync(fd)
        return append_and_sync
    if kind == "prealloc":
        fd = os.open(os.path.join(path, "wal"), os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, bytes(PREALLOC_BYTES))      # written zeros: no extent or size change later
        os.fsync(fd)
        offset = [0]

        def overwrite_and_sync(payload: bytes) -> None:
            os.pwrite(fd, payload, offset[0] % PREALLOC_BYTES)
            offset[0] += len(payload)
            os.fdatasync(fd)
        return overwrite_and_sync
    import lmdb
    env = lmdb.open(path, map_size=1 << 30, max_dbs=2, sync=True)
    db = env.open_db(b"log")
    counter = [0]

    def commit(payload: bytes) -> None:
        counter[0] += 1
        with env.begin(write=True, db=db) as txn:
            txn.put(counter[0].to_bytes(8, "big"), payload, append=True)
    return commit


class Framed(asyncio.Protocol):
    """Length-prefixed frames in both directions; `on_frame(self, body)` per frame received."""

    def __init__(self, on_frame: Callable[["Framed", bytes], None]) -> None:
        self.on_frame = on_frame
        self.buf = bytearray()
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 4:
            (n,) = _LEN.unpack_from(buf)
            if len(buf) < 4 + n:
                return
            body = bytes(buf[4:4 + n])
            del buf[:4 + n]
            self.on_frame(self, body)

    def send(self, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(_LEN.pack(len(body)) + body)


async def connect(port: int, on_frame: Callable[[Framed, bytes], None]) -> Framed:
    """A framed connection to 127.0.0.1:port, retried for up to 10 s while the other side starts."""
    loop = asyncio.get_running_loop()
    for _ in range(200):
        try:
            _, proto = await loop.create_connection(lambda: Framed(on_frame), "127.0.0.1", port)
            return proto
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


async def follower(port: int, store: Callable[[bytes], None]) -> None:
    """Store every frame durably, then acknowledge it with its first 8 bytes (the request id)."""
    def on_frame(conn: Framed, body: bytes) -> None:
        store(body)
        conn.send(body[:8])
    server = await asyncio.get_running_loop().create_server(lambda: Framed(on_frame), "127.0.0.1", port)
    await server.serve_forever()


async def leader(port: int, follower_ports: list[int], store: Callable[[bytes], None], threaded: bool) -> None:
    """Forward each client request to both followers, store it, answer once two copies are durable."""
    loop = asyncio.get_running_loop()
    acks: dict[bytes, int] = {}
    clients: dict[bytes, Framed] = {}

    writer = ThreadPoolExecutor(max_workers=1)

    def maybe_answer(rid: bytes) -> None:
        if rid not in acks:
            return
        acks[rid] += 1
        if acks[rid] == 2:                       # any two of the three copies are durable
            del acks[rid]
            clients.pop(rid).send(rid)

    def on_ack(conn: Framed, body: bytes) -> None:
        maybe_answer(body)

    peers = [await connect(fp, on_ack) for fp in follower_ports]

    def on_request(conn: Framed, body: bytes) -> None:
        rid = body[:8]
        acks[rid] = 0
        clients[rid] = conn
        for p in peers:
            p.send(body)
        if threaded:     # as raftlog's leader writes a large batch: on a writer thread
            loop.run_in_executor(writer, store, body).add_done_callback(lambda _f: maybe_answer(rid))
        else:            # on the loop, after the sends are out (acks wait in the socket meanwhile)
            store(body)
            maybe_answer(rid)
    server = await loop.create_server(lambda: Framed(on_request), "127.0.0.1", port)
    await server.serve_forever()


async def client(port: int, count: int, payload: int) -> list[float]:
    """One request in flight; each request's round trip in seconds."""
    loop = asyncio.get_running_loop()
    waiter: list[asyncio.Future] = []

    def on_answer(conn: Framed, body: bytes) -> None:
        waiter.pop().set_result(None)
    conn = await connect(port, on_answer)
    times = []
    pad = b"x" * max(0, payload - 8)
    for i in range(count + count // 10):
        fut = loop.create_future()
        waiter.append(fut)
        t = time.perf_counter()
        conn.send(i.to_bytes(8, "big") + pad)
        await fut
        if i >= count // 10:                      # the first tenth warms up
            times.append(time.perf_counter() - t)
    return times


def measure(kind: str, count: int, payload: int, leader_write: str) -> dict:
    """Start the three processes, run the client, stop them; latency percentiles in ms."""
    root = tempfile.mkdtemp(prefix="raftlog-floor-")
    ports = free_ports(3)
    procs = []
    try:
        for role, i in (("follower", 1), ("follower", 2), ("leader", 0)):
            d = os.path.join(root, f"n{i}")
            os.makedirs(d)
            args = [sys.executable, __file__, "--role", role, "--store", kind, "--dir", d, "--port", str(ports[i])]
            if role == "leader":
                args += ["--followers", f"{ports[1]},{ports[2]}", "--leader-write", leader_write]
            procs.append(subprocess.Popen(args))
        times = sorted(asyncio.run(client(ports[0], count, payload)))
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(root, ignore_errors=True)

    def pct(q: float) -> float:
        return round(times[min(len(times) - 1, int(q * len(times)))] * 1e3, 3)
    return {"store": kind, "leader_write": leader_write, "requests": len(times),
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", choices=STORES, action="append", help="repeat to pick several (default: all)")
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--payload", type=int, default=100)
    ap.add_argument("--leader-write", choices=("inline", "thread"), default="inline")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--role", choices=("leader", "follower"), help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--followers", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role:
        store = make_store(a.store[0], a.dir)
        if a.role == "follower":
            asyncio.run(follower(a.port, store))
        else:
            asyncio.run(leader(a.port, [int(p) for p in a.followers.split(",")], store, a.leader_write == "thread"))
        return
    results = [measure(kind, a.count, a.payload, a.leader_write) for kind in (a.store or STORES)]
    if a.json:
        print(json.dumps(results))
        return
    print(f"3 processes on loopback, one {a.payload} B request in flight, {a.count} requests per store, "
          f"leader writes {'on a thread' if a.leader_write == 'thread' else 'on its loop'}")
    for r in results:
        print(f"  {r['store']:<10} p50 {r['p50_ms']:6.3f} ms   p90 {r['p90_ms']:6.3f} ms   p99 {r['p99_ms']:6.3f} ms")


if __name__ == "__main__":
    main()
