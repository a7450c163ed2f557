"""In-process nodes on 127.0.0.1 for runtime tests: ephemeral ports, a cluster started and stopped
in the test's event loop, the leader they agree on, and a raw frame socket."""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from raftlog.hot import PROTOCOL_VERSION, ROLE_CLIENT, FrameDecoder, encode_handshake
from raftlog.runtime.node import Node, NodeConfig

from support.async_wait import until

CLUSTER = "unit"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_nodes(tmp_path: Path, n: int) -> list[Node]:
    """`n` started nodes of cluster CLUSTER on free ports, data dirs tmp_path/n1.., sync off."""
    addrs = {i: f"127.0.0.1:{free_port()}" for i in range(1, n + 1)}
    nodes = [Node(NodeConfig(node_id=i, peers=addrs, data_dir=str(tmp_path / f"n{i}"), cluster_id=CLUSTER,
                             sync=False)) for i in addrs]
    for node in nodes:
        await node.start()
    return nodes


async def wait_leader(nodes: list[Node], timeout: float = 30.0) -> Node:
    """The leader, once every node names it."""
    def agreed() -> Node | None:
        leaders = [n for n in nodes if str(n.raw.role) == "leader"]
        return leaders[0] if leaders and all(n.leader_id == leaders[0].node_id for n in nodes) else None
    return await until(agreed, "one leader named by every node", timeout=timeout,
                       seen=lambda: {n.node_id: (str(n.raw.role), n.leader_id) for n in nodes})


async def stop_all(nodes: list[Node]) -> None:
    """Stop every node, one after the other."""
    for node in nodes:
        await node.stop()


class Raw:
    """A bare socket speaking frames, to send what a well-behaved client never would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()
        self.frames: list = []

    @classmethod
    async def connect(cls, address: str) -> "Raw":
        """A raw socket connected to `address` ("host:port")."""
        host, port = address.rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def send(self, data: bytes) -> None:
        """Write `data` and wait until the socket has taken it."""
        self.writer.write(data)
        await self.writer.drain()

    async def frame(self, timeout: float = 5.0) -> tuple | None:
        """The next frame, or None at EOF."""
        while not self.frames:
            chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not chunk:
                return None
            self.frames += self.decoder.feed(chunk)
        return self.frames.pop(0)

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the other side closed (frames still buffered are dropped)."""
        try:
            while True:
                chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True

    async def hello(self, cluster: str = CLUSTER) -> tuple:
        """Send a client handshake for `cluster`; the node's first reply frame."""
        await self.send(encode_handshake(PROTOCOL_VERSION, ROLE_CLIENT, 0, cluster))
        return await self.frame()

    def close(self) -> None:
        """Close the socket without waiting."""
        self.writer.close()
