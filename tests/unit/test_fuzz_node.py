"""Hostile input against a running node: the limits in runtime/listener.py act.

In-process (fast, limits lowered with monkeypatch so each one is seen to act):
- a client that trickles a frame (slow loris) and one that says nothing are closed;
- connections over the limit are refused at once, and served again once below it;
- an unfinished frame over the role's buffer limit closes its connection (before and after
  the handshake), so a length field cannot make the node buffer up to the 64 MiB maximum;
- hundreds of Read requests pipelined by a client that does not read its replies queue a
  bounded number of reply bytes, and are all answered, in order, once it reads.

The seeded fuzzer against real node processes is test_fuzz_cluster.py (process tier).
"""
from __future__ import annotations

import asyncio
import logging
import struct

from raftlog.hot import (
    ERR_TOO_LARGE,
    FRAME_APPEND,
    FRAME_ENTRIES,
    FRAME_ERROR,
    FRAME_HANDSHAKE,
    encode_read,
    encode_status,
)
from raftlog.runtime import listener as transport_mod
from raftlog.runtime import replies as replies_mod
from raftlog.client import AsyncClient

from support.async_wait import until
from support.nodes import CLUSTER, Raw, start_nodes, stop_all, wait_leader


def messages_of(caplog, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level and r.name.startswith("raftlog")]


def run(coro) -> None:  # noqa: ANN001
    asyncio.run(asyncio.wait_for(coro, 60))


def open_connections(listener: transport_mod.Listener) -> int:
    """Connections the node counts against its limit: clients and those not yet handshaken."""
    return len(listener.clients) + len(listener.pending)


# ---- in-process: each limit acts ------------------------------------------------------------

def test_slow_loris_and_idle_clients_are_closed_active_ones_kept(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(transport_mod, "PARTIAL_FRAME_TIMEOUT", 1.0)
    monkeypatch.setattr(transport_mod, "CLIENT_IDLE_TIMEOUT", 1.5)
    monkeypatch.setattr(transport_mod, "SWEEP_SECONDS", 0.1)

    async def main() -> None:
        nodes = await start_nodes(tmp_path, 1)
        try:
            await wait_leader(nodes)
            addr = nodes[0].cfg.address
            loris, idle, active = await Raw.connect(addr), await Raw.connect(addr), await Raw.connect(addr)
            for r in (loris, idle, active):
                assert (await r.hello())[0] == FRAME_HANDSHAKE
            frame = encode_status(7)
            # The sleeps here are the behaviour under test, not synchronisation: a frame trickled
            # byte by byte, and a client active for twice the idle timeout.
            for b in frame[:-1]:                  # one byte at a time, never the last one
                await loris.send(bytes([b]))
                await asyncio.sleep(0.05)
            for k in range(12):                   # 3 s of traffic: never idle
                await active.send(encode_status(k + 1))
                assert (await active.frame())[1] == k + 1
                await asyncio.sleep(0.25)
            assert await loris.closed(timeout=5)
            assert await idle.closed(timeout=5)
            await active.send(encode_status(99))
            assert (await active.frame())[1] == 99, "an active client must be kept"
            for r in (loris, idle, active):
                r.close()
        finally:
            await stop_all(nodes)
    run(main())
    logs = messages_of(caplog)
    assert any("without finishing it; closing it" in m for m in logs), logs
    assert any("idle for 2s; closing it" in m for m in logs), logs


def test_connections_over_the_limit_are_refused_then_served_again(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(transport_mod, "MAX_CONNECTIONS", 20)

    async def main() -> None:
        nodes = await start_nodes(tmp_path, 1)
        try:
            await wait_leader(nodes)
            addr = nodes[0].cfg.address
            listener = nodes[0].listener
            held = [await Raw.connect(addr) for _ in range(10)]
            for r in held[:5]:
                assert (await r.hello())[0] == FRAME_HANDSHAKE
            held += [await Raw.connect(addr) for _ in range(10)]   # 5 clients + 15 silent = 20
            await until(lambda: open_connections(listener) == 20, "the node to hold the 20 connections",
                        seen=lambda: open_connections(listener))
            over = await Raw.connect(addr)
            assert await over.closed(timeout=5), "the 21st connection must be refused"
            assert nodes[0].listener.refused >= 1
            for r in held[:5]:                    # the clients already in are still served
                await r.send(encode_status(1))
                assert (await r.frame())[0] != FRAME_ERROR
            for r in held[5:10]:
                r.close()
            await until(lambda: open_connections(listener) == 15, "the node to see 5 connections closed",
                        seen=lambda: open_connections(listener))
            client = AsyncClient([addr], cluster_id=CLUSTER, timeout=10)
            assert await client.append(b"after the limit") >= 1
            await client.close()
            for r in held:
                r.close()
        finally:
            await stop_all(nodes)
    run(main())
    assert any("refused a connection: 20 client connections open, the limit is 20" in m
               for m in messages_of(caplog, logging.WARNING))


def test_an_unfinished_frame_over_the_role_limit_closes_the_connection(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(transport_mod, "CLIENT_MAX_BUFFER", 1 << 20)

    async def main() -> None:
        nodes = await start_nodes(tmp_path, 1)
        try:
            await wait_leader(nodes)
            addr = nodes[0].cfg.address
            # Before the handshake: a 10 MiB "handshake" (legal by max_frame) is cut off past 128 KiB.
            pre = await Raw.connect(addr)
            await pre.send(struct.pack(">IB", 10 << 20, FRAME_HANDSHAKE) + b"\0" * (300 << 10))
            err = await pre.frame()
            assert err is not None and err[0] == FRAME_ERROR and err[2] == ERR_TOO_LARGE, err
            # After a client handshake: a 50 MiB append is cut off past the client limit.
            post = await Raw.connect(addr)
            assert (await post.hello())[0] == FRAME_HANDSHAKE
            try:
                await post.send(struct.pack(">IB", 50 << 20, FRAME_APPEND) + b"\0" * (2 << 20))
            except (ConnectionResetError, BrokenPipeError):
                pass
            err = await post.frame()
            assert err is not None and err[0] == FRAME_ERROR and err[2] == ERR_TOO_LARGE, err
            assert await post.closed()
            # A legitimate append just under the limit still goes through.
            client = AsyncClient([addr], cluster_id=CLUSTER, timeout=10)
            assert await client.append(b"x" * ((1 << 20) - 4096)) >= 1
            await client.close()
            pre.close()
            post.close()
        finally:
            await stop_all(nodes)
    run(main())
    assert sum("of one unfinished frame; the limit here is" in m for m in messages_of(caplog, logging.WARNING)) == 2


def test_pipelined_reads_from_a_client_that_does_not_read_stay_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(replies_mod, "REPLY_BACKLOG_BYTES", 1 << 20)
    n_reads = 300

    async def main() -> None:
        nodes = await start_nodes(tmp_path, 1)
        try:
            await wait_leader(nodes)
            addr = nodes[0].cfg.address
            client = AsyncClient([addr], cluster_id=CLUSTER, timeout=20)
            await client.append_many([b"%06d" % k + b"r" * 2_000 for k in range(200)])   # ~400 KB of log
            await client.close()
            raw = await Raw.connect(addr)
            assert (await raw.hello())[0] == FRAME_HANDSHAKE
            await raw.send(b"".join(encode_read(k + 1, 1, 0, 16 << 20) for k in range(n_reads)))
            # Not reading: the kernel buffers fill, and the node's socket pauses writing; the
            # node must stop taking requests rather than queue every reply.
            conns = list(nodes[0].listener.clients)
            assert len(conns) == 1
            worst = 0

            def stalled() -> bool:
                nonlocal worst
                worst = max(worst, conns[0].backlog_bytes)
                return conns[0].write_paused
            await until(stalled, "the node's writes to the client to pause", seen=lambda: conns[0].backlog_bytes)
            # Unbounded, this would be 300 replies of ~400 KB queued at once (120 MB).
            assert worst < (1 << 20) + 4 * (400 << 10), f"{worst} bytes of replies queued for one client"
            seen = []
            while len(seen) < n_reads:
                f = await raw.frame(timeout=20)
                assert f is not None and f[0] == FRAME_ENTRIES, f
                seen.append(f[1])
            assert seen == list(range(1, n_reads + 1)), "replies must come in request order"
            raw.close()
        finally:
            await stop_all(nodes)
    run(main())
