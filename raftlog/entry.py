"""Entry: one data entry of the log as users see it (index, term, payload)."""
from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    """A committed data entry. `index` is its Raft index (internal entries take indexes too)."""

    index: int  # type: ignore[assignment]  # the field shadows tuple.index; renaming it would change the API
    term: int
    data: bytes
