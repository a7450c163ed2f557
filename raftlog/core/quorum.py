"""Majority rules over the hot-path primitives: commit index and election outcome."""
from __future__ import annotations

from enum import IntEnum
from typing import Iterable, Mapping

from raftlog.hot import quorum_commit


class VoteResult(IntEnum):
    """An election's state from the votes counted so far."""

    PENDING = 0
    LOST = 1
    WON = 2


def committed_index(voters: Iterable[int], match: Mapping[int, int]) -> int:
    """The largest index durable on a majority of `voters`, given each voter's match index.

    The caller applies the current-term rule (Raft figure 8).
    """
    return quorum_commit([match.get(v, 0) for v in voters])


def vote_result(voters: tuple[int, ...], votes: Mapping[int, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer be reached, else PENDING."""
    need = len(voters) // 2 + 1
    granted = rejected = 0
    for v in voters:
        answer = votes.get(v)
        if answer is True:
            granted += 1
        elif answer is False:
            rejected += 1
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING
