"""Client sessions on in-process nodes: an expired session is a clear error, and the client goes on with a new one."""
from __future__ import annotations

import asyncio

import pytest

from raftlog.errors import SessionExpired
from raftlog.client import AsyncClient
from support.async_wait import until
from support.nodes import CLUSTER, start_nodes, stop_all, wait_leader


def test_expired_session_raises_then_the_client_starts_a_new_one(tmp_path) -> None:
    async def main() -> None:
        nodes = await start_nodes(tmp_path, 3)
        try:
            await wait_leader(nodes)
            for n in nodes:
                n.sessions.table.timeout_ms = 1     # 1 ms of log time: idle sessions expire at the next header
            addrs = [n.cfg.address for n in nodes]
            async with AsyncClient(addrs, cluster_id=CLUSTER) as a, AsyncClient(addrs, cluster_id=CLUSTER) as b:
                first = await a.append(b"a-1")
                old = a.session_id
                # The behaviour under test, not synchronisation: more than the 1 ms timeout passes
                # on the leader's clock, which stamps b's header.
                await asyncio.sleep(0.01)
                await b.append(b"b-1")              # moves the log's clock: a's session expires everywhere
                with pytest.raises(SessionExpired):
                    await a.append(b"a-2")
                assert a.session_id != old
                last = await a.append(b"a-3")
                assert last > first
                data = [e.data for e in await a.read(1)]
                assert data.count(b"a-1") == 1 and b"a-2" not in data and data[-1] == b"a-3"

                def tables_at_one_index() -> dict[int, bytes] | None:
                    """Every node's table, taken in one loop turn once all have applied the same prefix."""
                    applied = {n.applied_index for n in nodes}
                    if len(applied) > 1 or min(applied) < last:
                        return None
                    return {n.node_id: n.sessions.table.to_bytes() for n in nodes}
                tables = await until(tables_at_one_index, f"every node to apply up to {last}",
                                     seen=lambda: {n.node_id: n.applied_index for n in nodes})
                assert len(set(tables.values())) == 1, f"every node expired the same sessions: {tables}"
        finally:
            await stop_all(nodes)

    asyncio.run(main())
