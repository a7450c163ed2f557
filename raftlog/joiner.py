"""Joining by address: a node started with `--join ADDR` asks the cluster to make it a member.

It asks (through ADDR and every member it knows, following redirects) to be added as a
learner, then asks for its promotion with a lag bound: the leader promotes it once its log
is within `max_lag` entries of the leader's. It is a client of the cluster like any other
(client.py); the node learns the members' addresses from the log meanwhile.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Optional

from raftlog.client import AsyncClient
from raftlog.runtime.node import DEFAULT_PROMOTE_LAG, NodeConfig
from raftlog.runtime.port import NodePort

log = logging.getLogger("raftlog.membership")


def joiner_for(cfg: NodeConfig) -> Callable[[NodePort], "Joiner"]:
    """The joiner a node started with `cfg.join` takes: Node(cfg, joiner=joiner_for(cfg))."""
    def make(port: NodePort) -> Joiner:
        assert cfg.join is not None
        return Joiner(port, cfg.join, cfg.address, cluster_id=cfg.cluster_id,
                      member_addresses=lambda: [a for i, a in cfg.peers.items() if i != cfg.node_id],
                      tls=cfg.tls, secret=cfg.secret, promote=cfg.promote, max_lag=cfg.promote_lag)
    return make


class Joiner:
    """Makes this node a member: added as a learner, then promoted once caught up (unless `promote` is off)."""

    def __init__(self, port: NodePort, join_address: str, own_address: str, *, cluster_id: str,
                 member_addresses: Callable[[], list[str]], tls: Any = None, secret: Optional[bytes] = None,
                 promote: bool = True, max_lag: int = DEFAULT_PROMOTE_LAG) -> None:
        self.port = port
        self.join_address = join_address
        self.own_address = own_address
        self.cluster_id = cluster_id
        self.member_addresses = member_addresses
        self.tls = tls
        self.secret = secret
        self.promote = promote
        self.max_lag = max_lag
        self.task: Optional[asyncio.Task] = None

    def start(self) -> None:
        """Run the join in the background until it is done or `stop` is called."""
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Cancel the join if it still runs."""
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass

    def _role_in_conf(self) -> str:
        conf = self.port.raw.conf_state
        nid = self.port.node_id
        if nid in conf.voters or nid in conf.voters_outgoing:
            return "voter"
        if nid in conf.learners:
            return "learner"
        return "none"

    async def _learn_members(self, client: AsyncClient) -> None:
        """Take the members' addresses from the cluster's status: the lower id of a pair dials
        (runtime/peer_transport.py), so a joiner with a lower id than a member must dial it
        itself, before its log (which would name them) can reach it."""
        members = (await client.status()).get("members") or {}
        for member_id, address in members.items():
            if int(member_id) != self.port.node_id and address and self.port.address_of(int(member_id)) != address:
                self.port.add_peer(int(member_id), address)

    async def run(self) -> None:
        """Retry until this node is a voter (or a learner, when promotion is off)."""
        nid = self.port.node_id
        while True:
            role = self._role_in_conf()
            if role == "voter" or (role == "learner" and not self.promote):
                log.info("node %d joined the cluster as a %s", nid, role)
                return
            client = AsyncClient([self.join_address, *self.member_addresses()], cluster_id=self.cluster_id,
                                 timeout=30.0, tls=self.tls, secret=self.secret)
            try:
                if role == "none":
                    await client.add_member(nid, self.own_address, learner=True)
                    log.info("node %d was added as a learner", nid)
                    await self._learn_members(client)
                elif self.promote:
                    await client.promote(nid, max_lag=self.max_lag)
                    log.info("node %d was promoted to voter", nid)
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # keep trying: the cluster may be electing, or busy with a change
                log.info("node %d: join step failed, retrying: %s", nid, exc)
                await asyncio.sleep(0.5)
            finally:
                await client.close()
            # The change is committed; wait until our own log holds it.
            for _ in range(100):
                if self._role_in_conf() != role:
                    break
                await asyncio.sleep(0.05)
