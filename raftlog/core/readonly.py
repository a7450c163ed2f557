"""Linearizable reads without log writes: ReadIndex and the leader lease (dissertation 6.4).

ReadIndex. A read that arrives at the leader is given the leader's commit index at that
moment as its read index, and is released once (a) the leader has committed an entry of its
own term (only then does its commit index cover everything committed before it led,
dissertation 6.4 step 1) and (b) a quorum of the configuration (both majorities when joint)
acknowledged a heartbeat sent AFTER the read arrived: at that moment no other leader can
have existed, so nothing committed before the read began is missing. The caller then waits
until it has applied up to the read index and serves the read from its state.

Heartbeat rounds make (b) cheap for many reads: every heartbeat broadcast carries a round
number in its context; followers echo it; the leader keeps, per voter, the highest round
acknowledged, and the largest round acknowledged by a quorum is the same quorum computation
as the commit index (confchange.committed_index). A read registered while round r was the
last one sent needs round r + 1; a whole burst of reads shares one heartbeat round.

A follower asks the leader for a read index (READ_INDEX); the leader answers
(READ_INDEX_RESP) once the read is released, and the follower serves it after applying that
far. A node that cannot reach a quorum therefore never serves one.

Lease (optional). A leader whose heartbeat round sent at tick t was acknowledged by a quorum
may serve reads at its commit index without a new round until tick
t + election_ticks_lo - drift: no other node can win an election sooner, because voters
ignore vote requests within election_ticks_lo of hearing from a leader (the check-quorum
lease, dissertation 6.4.1). `drift` is a safety margin for clocks that run at different
rates. Off unless the read asks for it; requires check_quorum.
"""
from __future__ import annotations

from typing import NamedTuple

_ROUND_BYTES = 8


class ReadState(NamedTuple):
    """A released read: `ctx` as the caller gave it; serve it once applied >= index."""

    index: int  # type: ignore[assignment]  # the field shadows tuple.index; renaming it would change the API
    ctx: bytes


class _Pending(NamedTuple):
    ctx: bytes
    # commit index when the read arrived (raised if the term's first commit was pending)
    index: int  # type: ignore[assignment]  # the field shadows tuple.index; renaming it would churn its users
    round: int          # the heartbeat round whose quorum acknowledgement releases it
    frm: int            # the node that asked (this node for local reads)


def encode_round(r: int) -> bytes:
    """Heartbeat context for round r."""
    return r.to_bytes(_ROUND_BYTES, "big")


def decode_round(ctx: bytes) -> int:
    """The round a heartbeat response echoes (0 for a context that is not a round)."""
    return int.from_bytes(ctx, "big") if len(ctx) == _ROUND_BYTES else 0


class ReadOnly:
    """A leader's reads waiting for a quorum round, and the rounds' bookkeeping."""

    __slots__ = ("round", "sent_tick", "acked", "pending", "quorum_round")

    def __init__(self) -> None:
        self.round = 0                       # the last heartbeat round sent
        self.sent_tick: dict[int, int] = {}  # round -> tick it was sent (recent rounds only)
        self.acked: dict[int, int] = {}      # voter -> highest round acknowledged
        self.pending: list[_Pending] = []    # in arrival order
        self.quorum_round = 0                # highest round acknowledged by a quorum

    def reset(self) -> None:
        """New term or role: forget every round and pending read (their askers retry)."""
        self.round = 0
        self.sent_tick.clear()
        self.acked.clear()
        self.pending.clear()
        self.quorum_round = 0

    def next_round(self, tick: int) -> bytes:
        """Start a heartbeat round at `tick`; its context."""
        self.round += 1
        self.sent_tick[self.round] = tick
        if len(self.sent_tick) > 64:
            for r in sorted(self.sent_tick)[:-32]:
                if r < self.quorum_round:
                    del self.sent_tick[r]
        return encode_round(self.round)

    def add(self, ctx: bytes, index: int, frm: int) -> None:
        """Register a read that arrived now, with read index `index`; it needs the next round."""
        self.pending.append(_Pending(ctx, index, self.round + 1, frm))

    def lease_until(self, election_lo: int, drift: int) -> int:
        """The tick before which the leader may serve lease reads (-1 when no round is confirmed)."""
        t = self.sent_tick.get(self.quorum_round)
        return -1 if t is None else t + election_lo - drift

    def release(self, committed_own_term: bool) -> list[_Pending]:
        """Reads whose round a quorum acknowledged, in order (none until the leader committed in its term)."""
        if not committed_own_term or not self.pending:
            return []
        q = self.quorum_round
        out = [p for p in self.pending if p.round <= q]
        if out:
            self.pending = [p for p in self.pending if p.round > q]
        return out
