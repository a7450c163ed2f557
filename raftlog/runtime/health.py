"""Whether a node is healthy, for `/health`: a leader heard from lately, and on the leader a quorum heard from lately.

Healthy means (with T = the upper end of the election timeout):
- a follower or learner knows a leader and received a message from it within the last T;
- a leader heard from a quorum of its configuration's voters (itself counted; both halves
  of a joint configuration) within the last T. A leader with check_quorum steps down after an
  election timeout without a quorum (dissertation 6.2); this says so as soon as it is true.

The node records when it last heard from each peer (`Liveness.heard`, one dict store per
received message) only while it serves metrics.
"""
from __future__ import annotations

import time
from typing import Any, NamedTuple, Optional

from raftlog.core import confchange
from raftlog.core.quorum import VoteResult


class Verdict(NamedTuple):
    """`ok` and a one-line reason (the body of /health)."""

    ok: bool
    reason: str


class Liveness:
    """When this node last received a message from each peer (time.monotonic())."""

    def __init__(self) -> None:
        self.last_heard: dict[int, float] = {}

    def heard(self, peer_id: int, now: float) -> None:
        """A message from `peer_id` arrived at `now`."""
        self.last_heard[peer_id] = now


def verdict(node: Any, liveness: Liveness, now: Optional[float] = None) -> Verdict:
    """The health of `node` (a runtime Node) as /health reports it; see the module docstring."""
    now = time.monotonic() if now is None else now
    raw = node.raw
    if raw is None or node.stopping:
        return Verdict(False, f"node {node.node_id} is not running")
    window = node.cfg.election_timeout_ms[1] / 1000
    ms = round(window * 1000)
    role, term, leader = str(raw.role), raw.term, raw.leader_id
    heard = liveness.last_heard
    if role == "leader":
        # Raft paper 5.2 / dissertation 6.2: a leader is only useful while a quorum hears it.
        conf = raw.conf_state
        voters = confchange.voters_of(conf)
        recent = {v: v == node.node_id or now - heard.get(v, float("-inf")) <= window for v in voters}
        answered = sum(recent.values())
        if confchange.election_result(conf, recent) is VoteResult.WON:
            return Verdict(True, f"leader in term {term}; {answered} of {len(voters)} voters heard within {ms} ms")
        return Verdict(False, f"leader in term {term} without a quorum: {answered} of {len(voters)} voters "
                              f"heard within {ms} ms")
    if not leader:
        return Verdict(False, f"no leader known ({role} in term {term})")
    last = heard.get(leader)
    if last is None or now - last > window:
        ago = "never" if last is None else f"{round((now - last) * 1000)} ms ago"
        return Verdict(False, f"leader {leader} of term {term} last heard {ago} (limit {ms} ms)")
    return Verdict(True, f"{role} of leader {leader} in term {term}, heard {round((now - last) * 1000)} ms ago")
