"""Which data dir each member runs on: a member whose data dir was replaced is refused.

Each data dir holds a random incarnation, made when the dir is created. Every node keeps,
durably, the incarnation it saw first for every member; a peer that later presents another
incarnation under the same id lost its state (term, vote, acknowledged entries) and must not
take part: a voter that forgot its vote can vote twice in one term (§5.2), a member that
forgot acknowledged entries breaks the majority that committed them (§5.4). It is refused
until it is removed from the configuration, which forgets it, and added back (it then
rejoins with a new incarnation, learned at its first contact like any new member).

Pure: no I/O. The caller persists `known()` (Storage.save_incarnations) whenever `check`
answers LEARN, before it relies on the connection.
"""
from __future__ import annotations

from enum import Enum
from typing import Iterable, Mapping


class Verdict(Enum):
    """The answer to a peer presenting (id, incarnation)."""

    ACCEPT = "accept"       # the incarnation this node knows for that id
    LEARN = "learn"         # first contact: accepted and remembered (persist the book)
    REFUSE = "refuse"       # another incarnation than the one known: the peer's data dir was replaced

    @property
    def accepted(self) -> bool:
        """True for ACCEPT and LEARN."""
        return self is not Verdict.REFUSE


class IncarnationBook:
    """The incarnation this node has seen for each member; refuses a member that comes back with another one."""

    def __init__(self, known: Mapping[int, int] | None = None) -> None:
        self._known: dict[int, int] = dict(known or {})

    def check(self, peer: int, incarnation: int) -> Verdict:
        """ACCEPT the known incarnation, LEARN an unknown peer's, REFUSE another incarnation for a known id."""
        seen = self._known.get(peer)
        if seen is None:
            self._known[peer] = incarnation
            return Verdict.LEARN
        return Verdict.ACCEPT if seen == incarnation else Verdict.REFUSE

    def known_incarnation(self, peer: int) -> int | None:
        """The incarnation remembered for `peer`, or None."""
        return self._known.get(peer)

    def forget_all_but(self, members: Iterable[int]) -> bool:
        """Forget every peer not in `members` (a committed configuration); True when something was forgotten."""
        keep = set(members)
        gone = [peer for peer in self._known if peer not in keep]
        for peer in gone:
            del self._known[peer]
        return bool(gone)

    def known(self) -> dict[int, int]:
        """A copy of peer id -> incarnation: what Storage.save_incarnations keeps."""
        return dict(self._known)
