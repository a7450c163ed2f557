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
