"""Embedding API: members(), transfer_leadership(), remove_member() on three in-process members."""
from __future__ import annotations

import asyncio
import socket

import raftlog


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_embedded_members_transfer_and_remove(tmp_path) -> None:
    async def main() -> None:
        ports = free_ports(3)
        peers = {i: f"127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3)}
        logs = [raftlog.open(str(tmp_path / f"n{i}"), node_id=i, peers=peers) for i in (1, 2, 3)]
        for log in logs:
            await log.start()
        try:
            lid = await logs[0].wait_for_leader(10)
            members = await logs[0].members()
            assert [(m["id"], m["address"], m["voter"]) for m in members] == \
                [(i, peers[i], True) for i in (1, 2, 3)]
            index = await logs[lid - 1].append(b"before")       # embedded appends go to the leader
            target = next(i for i in (1, 2, 3) if i != lid)
            await logs[target - 1].transfer_leadership(target)
            assert logs[target - 1].role == "leader"
            await logs[target - 1].remove_member(lid)
            rest = [log for log in logs if log.node_id != lid]
            for log in rest:
                for _ in range(200):
                    if {m["id"] for m in await log.members()} == {1, 2, 3} - {lid}:
                        break
                    await asyncio.sleep(0.02)
                assert {m["id"] for m in await log.members()} == {1, 2, 3} - {lid}
            new = await rest[0].wait_for_leader(10)
            assert new != lid
            assert int(await logs[new - 1].append(b"after")) > int(index)
        finally:
            for log in logs:
                await log.close()

    asyncio.run(main())


class Counter:
    """A tiny state machine with snapshots: how many data entries it applied."""

    def __init__(self) -> None:
        self.n = 0

    def apply(self, entry) -> None:
        self.n += 1

    def snapshot(self) -> bytes:
        return str(self.n).encode()

    def restore(self, f) -> None:
        self.n = int(f.read())


def test_client_sessions_survive_snapshots_compaction_and_a_restart(tmp_path) -> None:
    """A retry of a request whose log entries were compacted away still gets its original index."""
    from raftlog.core.sessions import encode_header
    from raftlog.hot import KIND_DATA, KIND_SESSION, RecordBatch, encode_append
    from raftlog.runtime.client import AsyncClient

    async def main() -> None:
        ports = free_ports(3)
        peers = {i: f"127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3)}
        opts = dict(peers=peers, snapshot_every=50, snapshot_tail=5)
        machines = {i: Counter() for i in (1, 2, 3)}
        logs = {i: raftlog.open(str(tmp_path / f"n{i}"), node_id=i, state_machine=machines[i], **opts)
                for i in (1, 2, 3)}
        for log in logs.values():
            await log.start()
        try:
            lid = await logs[1].wait_for_leader(10)
            async with AsyncClient(list(peers.values())) as client, AsyncClient(list(peers.values())) as other:
                for k in range(5):
                    await client.append(b"early-%d" % k)
                first = await client.append(b"request-1")    # the client's latest request: it may retry it
                seq = client._seq
                for k in range(30):                          # another session moves the log on
                    await other.append_many([b"filler-%d-%d" % (k, j) for j in range(5)])
                for log in logs.values():
                    await log.snapshot()                               # compacts the log below
                follower = next(i for i in (1, 2, 3) if i != lid)
                assert logs[follower].first_index > first               # the request's entries are gone
                # Restart the follower: its table comes from the snapshot, not from the log.
                await logs[follower].close()
                machines[follower] = Counter()
                logs[follower] = raftlog.open(str(tmp_path / f"n{follower}"), node_id=follower,
                                              state_machine=machines[follower], **opts)
                await logs[follower].start()
                await logs[follower].wait_for_leader(10)
                await logs[follower].transfer_leadership(follower)
                # Resend that request exactly as the client first sent it: same session, same seq.
                head = RecordBatch.encode(0, KIND_SESSION, [encode_header(client.session_id, seq, seq, 1)])
                batch = RecordBatch.concat([head, RecordBatch.encode(0, KIND_DATA, [b"request-1"])])
                again = await client._call(lambda rid: encode_append(rid, batch), client._appended)
                assert again == first
                entries = await client.read(1, consistency="linearizable")
                assert [e.data for e in entries].count(b"request-1") <= 1
        finally:
            for log in logs.values():
                await log.close()

    asyncio.run(main())
