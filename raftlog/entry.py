"""Entry: one data entry of the log as users see it (index, term, payload)."""
from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    """A committed data entry. `index` is its Raft index (internal entries take indexes too)."""

    index: int
    term: int
    data: bytes
