"""A leader that must read a corrupt entry back from disk to replicate it stops rather than send it.

In-process, three nodes on 127.0.0.1 with a tiny entry cache (engine option max_cache_bytes), so
the leader's durable entries are evicted and a lagging follower's catch-up is read back from
LMDB. One byte of one stored payload is flipped in the leader's data.mdb while the follower is
down; when the follower comes back the leader's read fails its CRC: the leader logs the index and
stops (wait_stopped raises CorruptLogError) instead of sending the record. The other two elect a
new leader, the follower is caught up from an intact copy, and every acknowledged append is on
both of them, byte for byte.
"""
from __future__ import annotations

import asyncio
import logging
import os

import pytest

from raftlog.errors import CorruptLogError
from raftlog.client import AsyncClient
from raftlog.runtime.node import Node, NodeConfig

from support.async_wait import until
from support.corruption import flip_byte_of
from support.nodes import free_port

CLUSTER = "corrupt-leader"
NEEDLE = b"leader-disk-corrupt-me-0100"


def test_leader_reading_a_corrupt_entry_from_disk_stops_rather_than_send_it(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="raftlog")

    async def main() -> None:
        addrs = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}

        def config(i: int) -> NodeConfig:
            return NodeConfig(node_id=i, peers=dict(addrs), data_dir=str(tmp_path / f"n{i}"), cluster_id=CLUSTER,
                              sync=False, engine_options={"max_cache_bytes": 1})

        nodes = {i: Node(config(i)) for i in addrs}
        running = set()
        try:
            for i, node in nodes.items():
                await node.start()
                running.add(i)
            leader = await until(lambda: next(
                (n for n in nodes.values() if str(n.raw.role) == "leader"
                 and all(m.raw.leader_id == n.node_id for m in nodes.values())), None), "a leader")
            lid = leader.node_id
            lagger_id = next(i for i in nodes if i != lid)
            third_id = next(i for i in nodes if i not in (lid, lagger_id))
            await nodes[lagger_id].stop()                  # falls behind: will need the entries
            running.discard(lagger_id)

            acked: dict[int, bytes] = {}
            async with AsyncClient([leader.cfg.address], cluster_id=CLUSTER, sessions=False) as c:
                items = [b"lead-%04d" % k for k in range(200)]
                items[100] = NEEDLE
                for i, p in zip(await c.append_many(items), items):
                    acked[i] = p
                for k in range(20):                        # more segments after it: it gets evicted
                    p = b"tail-%04d" % k
                    acked[await c.append(p)] = p
            bad = next(i for i, p in acked.items() if p == NEEDLE)
            lg = leader.raw.raft.log
            await until(lambda: lg._cache_first > bad, "the leader to evict the entry from its cache")

            assert flip_byte_of(os.path.join(leader.cfg.data_dir, "data.mdb"), NEEDLE) >= 1
            with pytest.raises(CorruptLogError) as info:   # the leader's stored copy is now bad
                leader.storage.records(bad, bad + 1)
            assert info.value.index == bad

            nodes[lagger_id] = Node(config(lagger_id))    # back: the leader must read it from disk
            await nodes[lagger_id].start()
            running.add(lagger_id)
            lagger = nodes[lagger_id]

            with pytest.raises(CorruptLogError) as info:
                await asyncio.wait_for(leader.wait_stopped(), 10)
            running.discard(lid)
            assert info.value.index == bad
            assert leader.corrupt_index == bad
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert any(f"corrupt log entry at index {bad}" in m and "stopping rather than replicate it" in m
                       for m in errors), errors
            # It never sent the bad bytes: the lagger has no corrupt record, and whatever it holds
            # at `bad` already is the intact payload (checked byte for byte below, after catch-up).
            assert lagger.corrupt_index is None
            if lagger.raw.raft.log.stable >= bad:
                lagger.storage.records(bad, bad + 1)       # passes its CRC

            # The healthy majority: a new leader, the lagger caught up, nothing acknowledged lost.
            healthy = [nodes[third_id], lagger]
            await until(lambda: any(str(n.raw.role) == "leader" for n in healthy), "a new leader")
            last = max(acked)
            await until(lambda: lagger.raw.raft.log.stable >= last and lagger.raw.raft.log.committed >= last,
                        "the lagger to catch up", timeout=10)
            for n in healthy:
                async with AsyncClient([n.cfg.address], cluster_id=CLUSTER, read_from="any", sessions=False) as c:
                    got = {e.index: e.data for e in await c.read(min(acked), consistency="stale")}
                    missing = [i for i in acked if got.get(i) != acked[i]]
                    assert not missing, f"node {n.node_id} lacks or differs at {missing[:5]}"
                    assert got[bad] == NEEDLE
                assert n.corrupt_index is None
                n.storage.records(min(acked), last + 1)   # every stored record passes its CRC
        finally:
            for i in list(running):
                try:
                    await nodes[i].stop()
                except Exception:
                    pass

    asyncio.run(main())
