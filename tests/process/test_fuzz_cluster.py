"""Hostile input against a running cluster: a seeded fuzzer against `raftlog node` processes.

Three nodes. While a well-behaved client appends, a fuzzer (seed printed, RAFTLOG_FUZZ_SEED
replays it) holds 500 idle connections open on the leader and sends random bytes and mutated
frames (flipped bytes, rewritten length fields, truncations, splices, wrong roles and ids,
out-of-range Raft fields) as client and as peer, to the leader and a follower. Afterwards: every
node is up, its memory grew by a bounded amount, the good client was served throughout, and the
final log holds exactly the good client's appends plus those fuzz appends that were valid frames
on a valid client connection (checked by decoding each fuzz connection's byte stream locally,
exactly as the node does).

The limits it relies on are each seen to act in-process in test_fuzz_node.py (unit tier).
"""
from __future__ import annotations

import asyncio
import os
import random
import struct
import threading

import pytest

from raftlog.core.messages import MessageType
from raftlog.hot import (
    FRAME_APPEND,
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

from support.cluster import ProcCluster
from support.history_workload import final_committed_log
from support.polling import wait_for


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
        _, version, role, _nid, cluster, _auth, _incarnation = frames[0]
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
