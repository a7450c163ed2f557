"""A lost peer connection moves the leader's progress for that peer back to probing.

The engine's side is RawNode.report_unreachable (etcd's ReportUnreachable); the runtime's
side is the node calling it when the transport reports a connection down.
"""
from __future__ import annotations

import asyncio
import random

from raftlog.core.config import Config
from raftlog.core.progress import ProgressState
from raftlog.core.rawnode import RawNode, Role
from raftlog.core.storage import MemoryStorage
from raftlog.runtime.node import Node, NodeConfig

from support.nodes import free_port


def _stabilize(nodes: dict[int, RawNode], stores: dict[int, MemoryStorage]) -> None:
    """Deliver every message and persist every Ready until nothing moves."""
    for _ in range(100):
        inbox = []
        for i, node in nodes.items():
            if node.has_ready():
                rd = node.ready()
                stores[i].save(hard_state=rd.hard_state, truncate_from=rd.truncate_from,
                               first_index=rd.entries_index, records=rd.entries)
                inbox += rd.messages + rd.persisted_messages
                node.advance(rd)
        for m in inbox:
            nodes[m.to].step(m)
        if not inbox and not any(n.has_ready() for n in nodes.values()):
            return
    raise AssertionError("did not stabilize")


def _three_nodes() -> dict[int, RawNode]:
    stores = {i: MemoryStorage() for i in (1, 2, 3)}
    nodes = {i: RawNode(Config(i, (1, 2, 3)), stores[i], random.Random(i)) for i in stores}
    nodes[1].campaign()
    _stabilize(nodes, stores)
    nodes[1].propose([b"x"])
    _stabilize(nodes, stores)
    return nodes


def test_leader_probes_an_unreachable_follower_again() -> None:
    nodes = _three_nodes()
    leader = nodes[1]
    assert leader.role is Role.LEADER
    pr = leader.raft.progress[2]
    assert pr.state is ProgressState.REPLICATE
    leader.report_unreachable(2)
    assert pr.state is ProgressState.PROBE
    assert pr.next == pr.match + 1
    assert leader.raft.progress[3].state is ProgressState.REPLICATE   # only the lost peer


def test_report_unreachable_is_ignored_off_the_leader_and_for_strangers() -> None:
    nodes = _three_nodes()
    nodes[2].report_unreachable(3)           # a follower has no progress to change
    nodes[1].report_unreachable(9)           # not a member
    assert all(pr.state is ProgressState.REPLICATE for p, pr in nodes[1].raft.progress.items() if p != 1)


def test_node_reports_a_lost_connection_to_the_engine(tmp_path) -> None:
    """A follower that stops: the leader's transport loses it and its progress goes back to probe."""
    async def main() -> None:
        addrs = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
        nodes = {i: Node(NodeConfig(node_id=i, peers=dict(addrs), data_dir=str(tmp_path / f"n{i}"),
                                    cluster_id="unreachable", sync=False)) for i in addrs}
        for node in nodes.values():
            await node.start()
        try:
            async def until(what: str, check) -> None:
                for _ in range(3000):          # 30 s at most, polled every 10 ms
                    if check():
                        return
                    await asyncio.sleep(0.01)
                raise AssertionError(f"timed out waiting for {what}")

            await until("a leader", lambda: any(n.raw.role is Role.LEADER for n in nodes.values()))
            leader = next(n for n in nodes.values() if n.raw.role is Role.LEADER)
            follower = next(i for i in nodes if i != leader.node_id)
            progress = leader.raw.raft.progress
            await until("replicate state", lambda: progress[follower].state is ProgressState.REPLICATE)
            await nodes[follower].stop()
            await until(f"leader to probe node {follower} (state {progress[follower].state})",
                        lambda: progress[follower].state is ProgressState.PROBE)
        finally:
            for node in nodes.values():
                await node.stop()

    asyncio.run(main())
