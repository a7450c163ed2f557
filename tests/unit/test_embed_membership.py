"""Embedding API: members(), transfer_leadership(), remove_member() on three in-process members."""
from __future__ import annotations

import asyncio

import raftlog
from raftlog.runtime.launcher import free_ports

from support.async_wait import until


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
                async def removed(log=log) -> bool:
                    return {m["id"] for m in await log.members()} == {1, 2, 3} - {lid}
                await until(removed, f"node {log.node_id} to see node {lid} removed", seen=log.members)
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
    from raftlog.client import AsyncClient

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
                # (below the first index kept a read is Compacted: read what every member keeps)
                kept = max(log.first_index for log in logs.values())
                entries = await client.read(kept, consistency="linearizable")
                assert [e.data for e in entries].count(b"request-1") <= 1
        finally:
            for log in logs.values():
                await log.close()

    asyncio.run(main())


def test_a_member_joins_an_embedded_cluster_by_address_and_catches_up_by_snapshot(tmp_path) -> None:
    async def main() -> None:
        ports = free_ports(4)
        peers = {i: f"127.0.0.1:{ports[i - 1]}" for i in (1, 2, 3)}
        opts = dict(snapshot_every=50, snapshot_tail=5)
        machines = {i: Counter() for i in (1, 2, 3, 4)}
        logs = {i: raftlog.open(str(tmp_path / f"n{i}"), node_id=i, peers=peers, state_machine=machines[i], **opts)
                for i in (1, 2, 3)}
        for log in logs.values():
            await log.start()
        try:
            lid = await logs[1].wait_for_leader(10)
            for k in range(40):
                await logs[lid].append_many([b"e-%d-%d" % (k, j) for j in range(5)])
            await logs[lid].snapshot()
            assert logs[lid].first_index > 100             # the early log is gone: a joiner needs the snapshot
            logs[4] = raftlog.open(str(tmp_path / "n4"), node_id=4, peers={4: f"127.0.0.1:{ports[3]}"},
                                   state_machine=machines[4], join=peers[1], **opts)
            await logs[4].start()
            async def joined_as_voter() -> bool:
                return [m["voter"] for m in await logs[lid].members() if m["id"] == 4] == [True]
            await until(joined_as_voter, "node 4 to be a voter", seen=logs[lid].members)
            last = await logs[lid].append(b"after-join")
            await until(lambda: logs[4].applied_index >= int(last), f"node 4 to apply up to {int(last)}",
                        seen=lambda: logs[4].applied_index)
            assert machines[4].n == machines[lid].n == 201
            assert logs[4].first_index > 1                  # it started from the installed snapshot
        finally:
            for log in logs.values():
                await log.close()

    asyncio.run(main())


def test_a_member_with_a_lower_id_than_every_member_joins_by_address(tmp_path) -> None:
    """The lower id of a pair dials: a joiner below every member must dial them itself, so it
    learns their addresses when it is added (it used to wait forever for a dial that never came)."""
    async def main() -> None:
        ports = free_ports(4)
        peers = {i: f"127.0.0.1:{ports[i - 1]}" for i in (2, 3, 4)}
        logs = {i: raftlog.open(str(tmp_path / f"n{i}"), node_id=i, peers=peers) for i in (2, 3, 4)}
        for log in logs.values():
            await log.start()
        try:
            lid = await logs[2].wait_for_leader(10)
            before = await logs[lid].append_many([b"before-%d" % k for k in range(20)])
            logs[1] = raftlog.open(str(tmp_path / "n1"), node_id=1, peers={1: f"127.0.0.1:{ports[0]}"},
                                   join=peers[2])
            await logs[1].start()

            async def joined_as_voter() -> bool:
                return [m["voter"] for m in await logs[lid].members() if m["id"] == 1] == [True]
            await until(joined_as_voter, "node 1 to be a voter", seen=logs[lid].members)
            await until(lambda: logs[1].applied_index >= int(before[-1]), "node 1 to catch up",
                        seen=lambda: logs[1].applied_index)
            assert [e.data for e in await logs[1].read(1)][:20] == [b"before-%d" % k for k in range(20)]
        finally:
            for log in logs.values():
                await log.close()

    asyncio.run(main())
