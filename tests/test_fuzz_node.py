"""Hostile input against a running node: the limits in runtime/listener.py and a seeded fuzzer.

In-process (fast, limits lowered with monkeypatch so each one is seen to act):
- a client that trickles a frame (slow loris) and one that says nothing are closed;
- connections over the limit are refused at once, and served again once below it;
- an unfinished frame over the role's buffer limit closes its connection (before and after
  the handshake), so a length field cannot make the node buffer up to the 64 MiB maximum;
- hundreds of Read requests pipelined by a client that does not read its replies queue a
  bounded number of reply bytes, and are all answered, in order, once it reads.

Process-level (`raftlog node` x3): while a well-behaved client appends, a fuzzer (seed
printed, RAFTLOG_FUZZ_SEED replays it) holds 500 idle connections open on the leader and sends
random bytes and mutated frames (flipped bytes, rewritten length fields, truncations, splices,
wrong roles and ids, out-of-range Raft fields) as client and as peer, to the leader and a
follower. Afterwards: every node is up, its memory grew by a bounded amount, the good client
was served throughout, and the final log holds exactly the good client's appends plus those
fuzz appends that were valid frames on a valid client connection (checked by decoding each
fuzz connection's byte stream locally, exactly as the node does).
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import struct
import threading

import pytest

from raftlog.core.messages import MessageType
from raftlog.hot import (
    ERR_TOO_LARGE,
    FRAME_APPEND,
    FRAME_ENTRIES,
    FRAME_ERROR,
    FRAME_HANDSHAKE,
    KIND_DATA,
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    ROLE_PEER,
    FrameDecoder,
    RecordBatch,
    encode_append,
    encode_handshake,
    encode_raft,
    encode_read,
    encode_status,
)
from raftlog.runtime import listener as transport_mod
from raftlog.runtime import replies as replies_mod
from raftlog.runtime.client import AsyncClient

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


# ---- process level: a seeded fuzzer against a running cluster ---------------------------------

class StreamLog:
    """What one fuzz connection sent, so the node's view of it can be recomputed locally."""

    def __init__(self) -> None:
        self.data = bytearray()

    def valid_append_payloads(self, cluster_id: str) -> set[bytes]:
        """Payloads of Append frames that a node would accept on this stream (a superset: the node may stop earlier)."""
        dec = FrameDecoder()
        try:
            frames = dec.feed(bytes(self.data))
        except Exception:
            # Decode frame by frame up to the error: feed again byte-block-wise.
            frames = []
            dec = FrameDecoder()
            for k in range(len(self.data)):
                try:
                    frames += dec.feed(bytes(self.data[k:k + 1]))
                except Exception:
                    break
        if not frames or frames[0][0] != FRAME_HANDSHAKE:
            return set()
        _, version, role, _nid, cluster, _auth = frames[0]
        if version != PROTOCOL_VERSION or role != ROLE_CLIENT or cluster != cluster_id:
            return set()
        out: set[bytes] = set()
        for f in frames[1:]:
            if f[0] == FRAME_APPEND:
                recs = f[2]
                out.update(recs.payload(i) for i in range(len(recs)))
        return out


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """One of several corruptions of a valid frame."""
    b = bytearray(frame)
    how = rng.randrange(7)
    if how == 0:                                   # flip a few bytes anywhere
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif how == 1:                                 # a random length field
        b[0:4] = struct.pack(">I", rng.choice([0, 1, 2, rng.randrange(1 << 32), (64 << 20) + 1, len(b) + 7]))
    elif how == 2:                                 # truncate
        b = b[:rng.randrange(1, len(b))]
    elif how == 3:                                 # garbage after
        b += os.urandom(rng.randint(1, 64))
    elif how == 4:                                 # a random type byte
        b[4] = rng.randrange(256)
    elif how == 5:                                 # corrupt a field inside the body
        if len(b) > 6:
            k = rng.randrange(5, len(b))
            b[k:k + 8] = os.urandom(min(8, len(b) - k))
    else:                                          # the valid frame, untouched
        pass
    return bytes(b)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.process
def test_fuzzing_a_running_cluster(tmp_path):
    from history_workload import final_committed_log
    from test_process_cluster import ProcCluster, wait_for

    seed = int(os.environ.get("RAFTLOG_FUZZ_SEED") or random.SystemRandom().randrange(1 << 31))
    print(f"\nfuzz seed {seed} (RAFTLOG_FUZZ_SEED={seed} replays it)")
    rng = random.Random(seed)
    cluster = ProcCluster(3, str(tmp_path))
    cid = "proc-test"
    try:
        cluster.start_all()
        leader, _ = wait_for("a leader", lambda: cluster.leader())
        follower = next(i for i in cluster.addresses if i != leader)
        rss0 = {i: rss_kib(cluster.procs[i].pid) for i in cluster.addresses}

        acked: dict[int, bytes] = {}
        good_errors: list[BaseException] = []
        stop = threading.Event()

        def good_client() -> None:
            try:
                with cluster.client(timeout=30.0) as c:
                    k = 0
                    while not stop.is_set():
                        items = [b"good-%d" % (k + j) for j in range(10)]
                        for i, p in zip(c.append_many(items), items):
                            acked[i] = p
                        k += 10
            except BaseException as exc:
                good_errors.append(exc)
        t = threading.Thread(target=good_client)
        t.start()

        streams: list[StreamLog] = []
        counts = {"idle": 0, "mutated": 0, "random": 0, "huge": 0, "loris": 0, "peer": 0}

        async def fuzz() -> None:
            idle = []
            lhost, lport = cluster.addresses[leader].rsplit(":", 1)
            for k in range(500):                    # half of them handshaken clients, half silent
                r, w = await asyncio.open_connection(lhost, int(lport))
                if k % 2 == 0:
                    w.write(encode_handshake(PROTOCOL_VERSION, ROLE_CLIENT, 0, cid))
                idle.append(w)
            counts["idle"] = len(idle)

            async def one(target: int, kind: str, n: int) -> None:
                host, port = cluster.addresses[target].rsplit(":", 1)
                try:
                    r, w = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
                except (OSError, asyncio.TimeoutError):
                    return
                log = StreamLog()
                streams.append(log)

                def send(data: bytes) -> None:
                    log.data += data
                    w.write(data)
                try:
                    if kind == "random":
                        send(os.urandom(rng.randint(1, 4096)))
                    elif kind == "huge":
                        send(encode_handshake(PROTOCOL_VERSION, ROLE_CLIENT, 0, cid))
                        send(struct.pack(">IB", rng.randint(8 << 20, 64 << 20), FRAME_APPEND))
                        for _ in range(8):
                            send(b"\0" * (1 << 20))
                            await w.drain()
                    elif kind == "loris":
                        send(encode_handshake(PROTOCOL_VERSION, ROLE_CLIENT, 0, cid))
                        frame = encode_append(1, RecordBatch.encode(0, KIND_DATA, [b"FUZZ-loris-%d" % n]))
                        for b in frame[:rng.randrange(1, len(frame))]:
                            send(bytes([b]))
                            await w.drain()
                            await asyncio.sleep(0.2)    # the workload: a slow loris trickles its frame
                    else:
                        peer = kind == "peer"
                        frm = rng.choice([i for i in cluster.addresses if i != target] + [0, 99])
                        hs = encode_handshake(PROTOCOL_VERSION, ROLE_PEER if peer else ROLE_CLIENT, frm if peer else 0,
                                              cid if rng.random() < 0.9 else "other")
                        send(hs if rng.random() < 0.8 else mutate(rng, hs))
                        for j in range(rng.randint(1, 6)):
                            if peer:
                                mt = rng.choice(list(MessageType))
                                big = rng.choice([0, 1, 1 << 32, (1 << 63) - 1, (1 << 64) - 1])
                                frame = encode_raft(int(mt), target, frm, rng.choice([0, 1, big]),
                                                    rng.choice([0, big]), rng.choice([0, 1, big]),
                                                    rng.choice([0, big]), rng.random() < 0.5, rng.choice([0, big]),
                                                    rng.choice([0, big]), os.urandom(rng.randint(0, 16)), None)
                            else:
                                choice = rng.randrange(3)
                                if choice == 0:
                                    frame = encode_append(rng.randrange(1 << 64), RecordBatch.encode(
                                        0, KIND_DATA, [b"FUZZ-%d-%d-%d" % (n, j, q) for q in range(rng.randint(1, 3))]))
                                elif choice == 1:
                                    frame = encode_read(rng.randrange(1 << 64), rng.choice([0, 1, 1 << 63]),
                                                        rng.choice([0, 1, 1 << 31]), rng.choice([0, 1 << 31]))
                                else:
                                    frame = encode_status(rng.randrange(1 << 64))
                            send(mutate(rng, frame))
                            await w.drain()
                    await asyncio.sleep(rng.uniform(0, 0.3))     # the workload: hold the connection a while
                except (OSError, ConnectionError):
                    pass
                finally:
                    w.close()

            rss = {i: 0 for i in cluster.addresses}

            def sample_rss() -> None:
                """Keep each node's largest resident size seen while the fuzzing runs."""
                for i in cluster.addresses:
                    rss[i] = max(rss[i], rss_kib(cluster.procs[i].pid))

            tasks = []
            for n in range(400):
                kind = rng.choices(["mutated", "peer", "random", "huge", "loris"], [60, 15, 15, 5, 5])[0]
                counts[kind] += 1
                tasks.append(asyncio.create_task(one(rng.choice([leader, follower]), kind, n)))
                if len(tasks) % 40 == 0:
                    sample_rss()
                    await asyncio.sleep(0.2)        # the workload: connections come in waves of 40
            await asyncio.gather(*tasks)
            sample_rss()
            for w in idle:
                w.close()
            return rss

        rss1 = asyncio.run(fuzz())
        during = len(acked)
        wait_for("the good client to be served after the fuzzing", lambda: len(acked) >= during + 20)
        stop.set()
        t.join(60)
        print(f"fuzz seed {seed}: connections {counts}; good client acknowledged {len(acked)} entries; "
              f"RSS KiB before {rss0} during {rss1}")
        assert not good_errors, f"the good client failed during fuzzing: {good_errors[0]!r}"
        assert len(acked) >= 100, "the good client was barely served"
        for i, p in cluster.procs.items():
            assert p.poll() is None, f"node {i} died under fuzzing (see {tmp_path}/node{i}.log)"
        for i in cluster.addresses:
            growth = rss1[i] - rss0[i]
            assert growth < 150 * 1024, f"node {i} grew by {growth} KiB under fuzzing"

        final = final_committed_log(cluster, sorted(cluster.addresses), wait_for)
        valid_fuzz: set[bytes] = set()
        for s in streams:
            valid_fuzz |= s.valid_append_payloads(cid)
        good = set(acked.values())
        for index, payload in acked.items():
            assert final.get(index) == payload, f"acknowledged {payload!r} at {index} is not in the final log"
        strays = {p for p in final.values() if p not in good and not p.startswith(b"good-") and p not in valid_fuzz}
        assert not strays, f"entries that were no valid append are in the log: {sorted(strays)[:5]}"
        fuzz_in_log = sum(1 for p in final.values() if p in valid_fuzz)
        print(f"fuzz seed {seed}: {fuzz_in_log} fuzz appends were valid frames and are in the log, "
              f"{len(valid_fuzz) - fuzz_in_log} valid ones were refused or never reached a leader")
    finally:
        cluster.close()
