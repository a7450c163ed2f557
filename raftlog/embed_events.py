"""What an embedded log tells its program besides entries: leader changes and its own removal, and the
security options it is opened with (raftlog/embed.py uses these; one place each)."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncGenerator, Callable, Optional

from raftlog.errors import Removed
from raftlog.runtime.node import Node
from raftlog.wire.auth import load_secret
from raftlog.wire.tls import TlsFiles

_END = object()


def security(tls: Any, secret_file: Optional[str]) -> dict:
    """NodeConfig's `tls` and `secret` for `raftlog.open(tls=..., secret_file=...)`, every file read now.

    ValueError (one line) for a `tls` that is not a TlsFiles, a file that cannot be loaded,
    or a secret under 16 bytes: the same checks as `raftlog node --tls-*/--secret-file`.
    """
    if tls is not None and not isinstance(tls, TlsFiles):
        raise ValueError(f"tls= takes raftlog.TlsFiles(cert, key, ca), not {type(tls).__name__}")
    try:
        if tls is not None:
            tls.server_context()          # loads every file: fail at open, not at the first connection
        secret = load_secret(secret_file) if secret_file else None
    except (OSError, ValueError) as exc:
        raise ValueError(f"TLS/secret: {exc}") from None
    return {"tls": tls, "secret": secret}


def removed_error(node: Node) -> Removed:
    """The Removed error of a node that knows it was removed (PRECONDITION: node.removal.removed)."""
    return Removed(node.node_id, dict(node.removal.members or {}))


async def leader_changes(node: Node, closed: Callable[[], bool]) -> AsyncGenerator[tuple[int, Optional[int]], None]:
    """`(term, leader id or None)`: the current one, then each change node's LeaderWatch reports, until it stops."""
    queue: asyncio.Queue = asyncio.Queue()
    unsubscribe = node.leadership.subscribe(lambda term, leader: queue.put_nowait((term, leader)), now=True,
                                            on_close=lambda: queue.put_nowait(_END))
    try:
        while not closed():
            item = await queue.get()
            if item is _END:
                return
            yield item
    finally:
        unsubscribe()
