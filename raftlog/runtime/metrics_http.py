"""The metrics port: `/metrics` (Prometheus text) and `/health` (200 or 503 and one line), on the node's event loop.

Served by asyncio on the node's own loop rather than by prometheus_client's server thread:
the collector (runtime/metrics.py) and the health verdict read the engine's state, which only
the loop thread may read consistently, and an embedded node's loop is the embedding
program's. HTTP/1.0 style: one request per connection, then close. Only GET and HEAD.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Optional

from raftlog.runtime.health import Verdict
from raftlog.wire.addresses import format_address, parse_address

log = logging.getLogger("raftlog.metrics")

REQUEST_TIMEOUT = 5.0        # seconds for a scraper to send its request line and headers
MAX_HEADER_BYTES = 16384


def metrics_address(text: str) -> tuple[str, int]:
    """(host, port) of a metrics address HOST:PORT; port 0 asks for any free port. PeerSpecError when malformed."""
    if text.endswith(":0"):
        return parse_address(text[:-1] + "1")[0], 0
    return parse_address(text)


class MetricsServer:
    """Serves `/metrics` from `registry` and `/health` from `health()` on HOST:PORT (port 0: any free port)."""

    def __init__(self, address: str, registry: Any, health: Callable[[], Verdict]) -> None:
        self.address = address
        self.registry = registry
        self.health = health
        self._server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> None:
        """Listen; `bound` is the address actually listened on afterwards."""
        host, port = metrics_address(self.address)
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True,
                                                  limit=MAX_HEADER_BYTES)

    @property
    def bound(self) -> str:
        """HOST:PORT the server listens on (the real port when 0 was asked for)."""
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return format_address(host, port)

    async def close(self) -> None:
        """Stop listening (requests being answered finish)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            status, ctype, body, method = self._answer(head)
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode("latin-1"))
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _answer(self, head: bytes) -> tuple[str, str, bytes, str]:
        """(status line, content type, body, method) for the request whose head is `head`."""
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3:
            return "400 Bad Request", "text/plain", b"bad request line\n", ""
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"only GET and HEAD\n", method
        if target == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry), method
        if target == "/health":
            ok, reason = self.health()
            return ("200 OK" if ok else "503 Service Unavailable"), "text/plain; charset=utf-8", \
                (reason + "\n").encode(), method
        return "404 Not Found", "text/plain", b"try /metrics or /health\n", method
