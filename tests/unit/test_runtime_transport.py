"""Transport and client service over real sockets on 127.0.0.1 (in-process nodes, ephemeral ports).

Bad input: garbage, an oversized frame, the wrong cluster id, a non-member peer id, a first
frame that is not a handshake: each gets an error frame where possible, its connection is
closed, one warning is logged, and the node keeps serving everyone else.
Peer links: bounded send queues towards a peer that stops reading, reconnect after loss,
refusal of the wrong node at a peer's address.
"""
from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from raftlog.core.messages import Message, MessageType
from raftlog.hot import (
    ERR_BAD_REQUEST,
    ERR_CLUSTER_MISMATCH,
    ERR_TOO_LARGE,
    FRAME_APPENDED,
    FRAME_ENTRIES,
    FRAME_ERROR,
    FRAME_HANDSHAKE,
    FRAME_RAFT,
    FRAME_STATUS_REPLY,
    KIND_DATA,
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    ROLE_PEER,
    FrameDecoder,
    RecordBatch,
    encode_append,
    encode_handshake,
    encode_read,
    encode_status,
)
from raftlog.client import AsyncClient, RequestRejected
from raftlog.runtime.node import Node, NodeConfig
from raftlog.runtime.peer_transport import PeerTransport

from support.async_wait import until
from support.nodes import CLUSTER, Raw, free_port, start_nodes, stop_all, wait_leader


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("raftlog")]


def test_bad_input_gets_error_and_close_while_others_are_served(tmp_path, caplog):
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        nodes = await start_nodes(tmp_path, 1)
        try:
            await wait_leader(nodes)
            addr = nodes[0].cfg.address
            good = AsyncClient([addr], cluster_id=CLUSTER)
            assert await good.append(b"before") >= 1
            cases = {
                "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                "unknown frame type": struct.pack(">IB", 6, 250) + b"hello",
                "oversized frame": struct.pack(">IB", 100 << 20, 10) + b"\0" * 64,
                "not a handshake first": encode_status(1),
                "wrong cluster id": encode_handshake(PROTOCOL_VERSION, ROLE_CLIENT, 0, "someone-else"),
                "non-member peer": encode_handshake(PROTOCOL_VERSION, ROLE_PEER, 9, CLUSTER),
                "peer claiming our own id": encode_handshake(PROTOCOL_VERSION, ROLE_PEER, 1, CLUSTER),
            }
            for name, data in cases.items():
                before = len(warnings_of(caplog))
                raw = await Raw.connect(addr)
                await raw.send(data)
                reply = await raw.frame()
                assert reply is not None and reply[0] == FRAME_ERROR, name
                if name == "wrong cluster id":
                    assert reply[2] == ERR_CLUSTER_MISMATCH
                assert await raw.closed(), name
                raw.close()
                assert len(warnings_of(caplog)) == before + 1, (name, warnings_of(caplog)[before:])
                # The node still serves a well-behaved client on its existing connection.
                assert await good.append(name.encode()) >= 1
            # Garbage after a good handshake closes that connection too.
            raw = await Raw.connect(addr)
            assert (await raw.hello())[0] == FRAME_HANDSHAKE
            await raw.send(b"\x00\x00\x00\x02\x0a\x01")   # an Append frame too short for its request id
            assert (await raw.frame())[0] == FRAME_ERROR
            assert await raw.closed()
            raw.close()
            entries = await good.read(1)
            assert [e.data for e in entries][0] == b"before"
            await good.close()
        finally:
            await stop_all(nodes)

    asyncio.run(main())


def test_request_errors_keep_the_connection(tmp_path):
    async def main() -> None:
        nodes = await start_nodes(tmp_path, 1)
        try:
            await wait_leader(nodes)
            addr = nodes[0].cfg.address
            raw = await Raw.connect(addr)
            assert (await raw.hello())[0] == FRAME_HANDSHAKE
            await raw.send(encode_append(7, b""))                        # no records
            reply = await raw.frame()
            assert reply[0] == FRAME_ERROR and reply[1] == 7 and reply[2] == ERR_BAD_REQUEST
            big = RecordBatch.encode(0, KIND_DATA, [b"x" * (5 << 20)])
            await raw.send(encode_append(8, big))
            reply = await raw.frame()
            assert reply[0] == FRAME_ERROR and reply[1] == 8 and reply[2] == ERR_TOO_LARGE
            # Many requests in flight on one connection, answered by request id.
            for rid in range(100, 110):
                await raw.send(encode_append(rid, RecordBatch.encode(0, KIND_DATA, [b"a%d" % rid, b"b"])))
            await raw.send(encode_status(99))
            got = {}
            while len(got) < 11:
                f = await raw.frame()
                got[f[1]] = f
            assert got[99][0] == FRAME_STATUS_REPLY
            firsts = sorted(got[rid][2] for rid in range(100, 110))
            assert all(got[rid][0] == FRAME_APPENDED and got[rid][3] == 2 for rid in range(100, 110))
            assert firsts == list(range(firsts[0], firsts[0] + 20, 2))
            # Read: bounded by count, then by bytes (at least one entry), data entries only.
            await raw.send(encode_read(1, 1, 5, 0))
            f = await raw.frame()
            assert f[0] == FRAME_ENTRIES and len(f[3]) <= 5 and f[2] > 1
            assert all(f[4].kind(i) == KIND_DATA for i in range(len(f[4])))
            await raw.send(encode_read(2, firsts[0], 100, 1))
            f = await raw.frame()
            assert list(f[3]) == [firsts[0]] and f[2] == firsts[0] + 1
            raw.close()
            with pytest.raises(RequestRejected):
                async with AsyncClient([addr], cluster_id=CLUSTER) as c:
                    await c.append(b"y" * (5 << 20))
        finally:
            await stop_all(nodes)

    asyncio.run(main())


def test_client_follows_redirects_and_reads_from_any_member(tmp_path):
    async def main() -> None:
        nodes = await start_nodes(tmp_path, 3)
        try:
            leader = await wait_leader(nodes)
            follower = next(n for n in nodes if n is not leader)
            # sessions=False: this checks index arithmetic across requests, which a session's
            # header record (one index per request, tested in test_process_sessions) would shift.
            async with AsyncClient([follower.cfg.address], cluster_id=CLUSTER, sessions=False) as c:
                first = await c.append(b"one")
                idx = await c.append_many([b"two", b"three"] * 500)
                assert idx == list(range(first + 1, first + 1001))
                assert (await c.status())["role"] == "leader"
                entries = await c.read(first)
                assert [e.data for e in entries[:3]] == [b"one", b"two", b"three"]
                assert [e.index for e in entries] == [first] + idx
                assert len(await c.read(first, limit=7)) == 7
            async with AsyncClient([follower.cfg.address], cluster_id=CLUSTER, read_from="any") as c:
                async def read_all() -> bool:
                    return len(await c.read(first)) == 1001
                await until(read_all, f"node {follower.node_id} to serve all 1001 entries",
                            seen=lambda: follower.applied_index)
                assert (await c.status())["id"] == follower.node_id
            with pytest.raises(RequestRejected):
                async with AsyncClient([follower.cfg.address], cluster_id="wrong") as c:
                    await c.append(b"x")
        finally:
            await stop_all(nodes)

    asyncio.run(main())


def test_requests_read_together_become_one_proposal_in_request_order(tmp_path):
    """40 Append frames in one write: the leader proposes them together (fewer engine proposals
    than requests) and every request gets its own consecutive indexes, in the order sent."""
    async def main() -> None:
        nodes = await start_nodes(tmp_path, 3)
        try:
            leader = await wait_leader(nodes)
            sizes: list[int] = []
            propose = leader.raw.propose

            def counting(records):
                sizes.append(len(records))
                return propose(records)
            leader.raw.propose = counting
            raw = await Raw.connect(leader.cfg.address)
            assert (await raw.hello())[0] == FRAME_HANDSHAKE
            counts = [1 + k % 3 for k in range(40)]
            await raw.send(b"".join(encode_append(rid, RecordBatch.encode(0, KIND_DATA, [b"r%d-%d" % (rid, j)
                                                                                     for j in range(n)]))
                                    for rid, n in enumerate(counts, start=1)))
            answers = [await raw.frame() for _ in counts]
            raw.close()
            assert [a[0] for a in answers] == [FRAME_APPENDED] * 40
            by_id = {a[1]: (a[2], a[3]) for a in answers}
            expect = by_id[1][0]
            for rid, n in enumerate(counts, start=1):
                assert by_id[rid] == (expect, n)
                expect += n
            assert sum(sizes) == sum(counts) and len(sizes) < len(counts)
            entries = await _read_all(leader, by_id[1][0], sum(counts))
            assert [e.data for e in entries] == [b"r%d-%d" % (rid, j) for rid, n in enumerate(counts, start=1)
                                                 for j in range(n)]
        finally:
            await stop_all(nodes)

    asyncio.run(main())


async def _read_all(node: Node, start: int, count: int) -> list:
    async with AsyncClient([node.cfg.address], cluster_id=CLUSTER) as c:
        return await c.read(start, limit=count)


# -- peer links ---------------------------------------------------------------------------

class FakePeer:
    """A listening 'node 2' that answers the handshake (as `claim_id`) and then reads or not."""

    def __init__(self, claim_id: int = 2, read: bool = True) -> None:
        self.claim_id = claim_id
        self.read = read
        self.handshakes = 0
        self.messages: list = []
        self.errors: list[str] = []     # messages of the error frames the dialer sent (its refusals)
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        dec = FrameDecoder()
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            for f in dec.feed(chunk):
                if f[0] == FRAME_HANDSHAKE:
                    self.handshakes += 1
                    writer.write(encode_handshake(PROTOCOL_VERSION, ROLE_PEER, self.claim_id, CLUSTER))
                    if not self.read:
                        await asyncio.sleep(3600)   # never read again: the sender's queue must stay bounded
                elif f[0] == FRAME_RAFT:
                    self.messages.append(f)
                elif f[0] == FRAME_ERROR:
                    self.errors.append(f[5])

    def drop_connections(self) -> None:
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.drop_connections()
        self.server.close()


def test_peer_reconnects_after_loss():
    async def main() -> None:
        peer = FakePeer()
        port = await peer.start()
        t = PeerTransport(1, CLUSTER, {1: "127.0.0.1:1", 2: f"127.0.0.1:{port}"}, lambda m: None)
        t.start()
        try:
            await until(lambda: t.connected(2), "a connection to peer 2")
            assert t.send(Message(MessageType.HEARTBEAT, 2, 1, 5))
            await until(lambda: len(peer.messages) == 1, "the heartbeat to arrive", seen=lambda: peer.messages)
            assert peer.messages[0][1:5] == (MessageType.HEARTBEAT, 2, 1, 5)
            peer.drop_connections()
            await until(lambda: peer.handshakes == 2 and t.connected(2), "a second connection after the loss",
                        seen=lambda: (peer.handshakes, t.connected(2)))
            assert t.send(Message(MessageType.HEARTBEAT, 2, 1, 6))
            await until(lambda: len(peer.messages) == 2, "the second heartbeat to arrive", seen=lambda: peer.messages)
        finally:
            await t.close()
            await peer.close()

    asyncio.run(main())


def test_send_queue_to_a_peer_that_stops_reading_is_bounded():
    async def main() -> None:
        peer = FakePeer(read=False)
        port = await peer.start()
        bound = 1 << 20
        t = PeerTransport(1, CLUSTER, {1: "127.0.0.1:1", 2: f"127.0.0.1:{port}"}, lambda m: None, queue_bytes=bound)
        t.start()
        try:
            await until(lambda: t.connected(2), "a connection to peer 2")
            entries = RecordBatch.encode(1, KIND_DATA, [b"z" * 60_000])
            sent = 0
            for k in range(2000):                    # ~120 MB offered
                sent += t.send(Message(MessageType.APPEND, 2, 1, 1, 1, k, 0, entries=entries))
                if k % 50 == 0:
                    await asyncio.sleep(0)           # let the socket fill and pause writing
            conn = t.conns[2]
            assert t.dropped[2] > 0 and sent < 2000
            assert conn.backlog_bytes < bound + (4 << 20), conn.backlog_bytes
        finally:
            await t.close()
            await peer.close()

    asyncio.run(main())


def test_dialer_refuses_the_wrong_node_at_a_peer_address(caplog):
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        peer = FakePeer(claim_id=3)
        port = await peer.start()
        ups: list[int] = []
        t = PeerTransport(1, CLUSTER, {1: "127.0.0.1:1", 2: f"127.0.0.1:{port}", 3: "127.0.0.1:2"},
                          lambda m: None, lambda p, up: ups.append(p) if up else None)
        t.start()
        try:
            # The refusal reaches the peer as an error frame; by then the dialer has decided.
            await until(lambda: peer.errors, "the dialer to refuse node 3 at node 2's address",
                        seen=lambda: (peer.handshakes, t.connected(2), ups))
            assert "expected node 2" in peer.errors[0], peer.errors
            assert not t.connected(2) and ups == [], "the wrong node was taken as peer 2"
        finally:
            await t.close()
            await peer.close()

    asyncio.run(main())
    assert any("expected node 2" in m for m in warnings_of(caplog))


def test_a_peer_sending_garbage_or_misaddressed_messages_is_cut_off(tmp_path, caplog):
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        addrs = {1: f"127.0.0.1:{free_port()}", 2: f"127.0.0.1:{free_port()}"}
        node = Node(NodeConfig(node_id=1, peers=addrs, data_dir=str(tmp_path / "n1"), cluster_id=CLUSTER, sync=False))
        await node.start()
        try:
            from raftlog.hot import encode_raft
            for name, payload in {
                "garbage": b"\xff" * 64,
                "misaddressed": encode_raft(MessageType.HEARTBEAT, 3, 2, 1, 0, 0, 0, False, 0, 0),
                "impersonating": encode_raft(MessageType.HEARTBEAT, 1, 3, 1, 0, 0, 0, False, 0, 0),
                "client frame": encode_status(5),
            }.items():
                before = len(warnings_of(caplog))
                raw = await Raw.connect(addrs[1])
                await raw.send(encode_handshake(PROTOCOL_VERSION, ROLE_PEER, 2, CLUSTER))
                assert (await raw.frame())[0] == FRAME_HANDSHAKE
                await until(lambda: node.peers.connected(2), "the fake peer 2 to be attached")
                await raw.send(payload)
                reply = await raw.frame()
                assert reply is not None and reply[0] == FRAME_ERROR, name
                assert await raw.closed(), name
                raw.close()
                await until(lambda: not node.peers.connected(2), f"the {name} peer to be cut off")
                assert len(warnings_of(caplog)) == before + 1, (name, warnings_of(caplog)[before:])
            async with AsyncClient([addrs[1]], cluster_id=CLUSTER) as c:
                assert (await c.status())["id"] == 1        # still serving
        finally:
            await node.stop()

    asyncio.run(main())


def test_client_gives_up_on_a_silent_member_and_tries_the_next(tmp_path):
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)                # takes the handshake, then says nothing, ever
            writer.write(encode_handshake(PROTOCOL_VERSION, ROLE_PEER, 7, CLUSTER))
            await asyncio.sleep(3600)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        stuck = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        nodes = await start_nodes(tmp_path, 1)
        try:
            await wait_leader(nodes)
            async with AsyncClient([stuck, nodes[0].cfg.address], cluster_id=CLUSTER, attempt_timeout=0.3) as c:
                assert await c.append(b"got through") >= 1
        finally:
            server.close()
            await stop_all(nodes)

    asyncio.run(main())
