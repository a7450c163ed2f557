"""Parsing and checking member lists: `ID=HOST:PORT,...` (nodes) or plain `HOST:PORT,...` (clients).

Kept free of asyncio and click so the CLI can validate arguments before anything starts
or anything is written.
"""
from __future__ import annotations

from typing import Optional


class PeerSpecError(ValueError):
    """A member list is malformed: bad syntax, bad port, duplicate id or address."""


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port). PeerSpecError when the port is missing or out of range."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise PeerSpecError(f"address {text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise PeerSpecError(f"address {text!r} has a bad port") from None
    if not 0 < port < 65536:
        raise PeerSpecError(f"address {text!r} has a port outside 1-65535")
    return host, port


def format_address(host: str, port: int) -> str:
    """The inverse of parse_address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_peers(text: str, *, require_ids: bool = True) -> dict[int, str]:
    """`1=h:p,2=h:p` -> {1: "h:p", 2: "h:p"}; ids >= 1, no duplicate id or address.

    With require_ids=False, plain `h:p,h:p` is accepted too and keyed -1, -2, ... by position
    (a negative key means "id unknown", for client commands that only need addresses).
    """
    members: dict[int, str] = {}
    seen: dict[tuple[str, int], str] = {}
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise PeerSpecError("the member list is empty")
    for n, item in enumerate(items):
        ident: Optional[int]
        if "=" in item:
            id_text, _, addr = item.partition("=")
            try:
                ident = int(id_text)
            except ValueError:
                raise PeerSpecError(f"member {item!r}: id {id_text!r} is not a number") from None
            if ident < 1:
                raise PeerSpecError(f"member {item!r}: ids start at 1")
        else:
            if require_ids:
                raise PeerSpecError(f"member {item!r} is not ID=HOST:PORT")
            ident, addr = None, item
        host, port = parse_address(addr)
        address = format_address(host, port)
        key = (host, port)
        if key in seen:
            raise PeerSpecError(f"address {address} is given twice")
        seen[key] = address
        if ident is None:
            ident = -(n + 1)
        elif ident in members:
            raise PeerSpecError(f"node id {ident} is given twice")
        members[ident] = address
    return members
