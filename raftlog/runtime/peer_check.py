"""A restarted node's --peers against the configuration in its log: the log is the truth.

A member's configuration lives in its log (every change is an entry, replicated and kept
with the log; dissertation 4.1: a server uses the latest configuration in its log). The
command line's --peers only bootstraps a new cluster. On a restart they can disagree (a
member added or removed since, an address changed, a typo, the wrong --peers for this
cluster): the node then starts from its log's configuration and says, in one WARNING
line, what --peers got wrong, so that the operator fixes the command line (or changes the
membership with `raftlog members`) instead of believing it took effect.
"""
from __future__ import annotations

import logging
from typing import Optional

from raftlog.core import confchange
from raftlog.core.messages import ConfState

__all__ = ["peers_from_log", "peer_differences", "use_log_peers"]

log = logging.getLogger("raftlog.node")


def peers_from_log(node_id: int, given: dict[int, str], conf: ConfState) -> dict[int, str]:
    """The members to dial, as the log's configuration `conf` has them.

    Every member of `conf` at its address there (or the given one when the log carries no
    address for it), plus this node at its given address (it listens there). A configuration
    naming no member (a new joiner's empty log) keeps `given`.
    """
    members = confchange.members(conf)
    if not members:
        return dict(given)
    logged = confchange.address_map(conf)
    peers = {nid: logged.get(nid) or given[nid] for nid in sorted(members) if logged.get(nid) or nid in given}
    peers[node_id] = given[node_id]
    return peers


def peer_differences(node_id: int, given: dict[int, str], conf: ConfState) -> Optional[str]:
    """What `given` (--peers) says differently from the log's configuration `conf`, in one line; None when nothing.

    Names the members --peers adds or lacks, and the addresses it gives differently (this
    node's own included: it listens at the given one, the others dial the log's). A
    configuration naming no member says nothing (a new joiner's empty log).
    """
    members = confchange.members(conf)
    if not members:
        return None
    logged = confchange.address_map(conf)
    parts = []
    extra = sorted(set(given) - members)
    missing = sorted(members - set(given))
    if extra:
        parts.append(f"--peers names {_ids(extra)}, not members in the log")
    if missing:
        parts.append(f"--peers lacks {_ids(missing)}, members in the log")
    moved = [f"{nid} at {given[nid]} (the log: {logged[nid]}{_OWN if nid == node_id else ''})"
             for nid in sorted(members & set(given)) if nid in logged and logged[nid] != given[nid]]
    if moved:
        parts.append("--peers puts " + ", ".join(moved))
    if not parts:
        return None
    return (f"node {node_id}: " + "; ".join(parts) + f"; starting from the log's configuration "
            f"({confchange.describe(conf)}): the log is the truth; change members with `raftlog members`")


def use_log_peers(node_id: int, given: dict[int, str], conf: ConfState, *, warn: bool) -> dict[int, str]:
    """peers_from_log, after logging peer_differences as one WARNING line when `warn` and there are any."""
    if warn:
        differences = peer_differences(node_id, given, conf)
        if differences:
            log.warning("%s", differences)
    return peers_from_log(node_id, given, conf)


_OWN = "; it listens at the first, the other members dial the second"


def _ids(ids: list[int]) -> str:
    return ("member " if len(ids) == 1 else "members ") + ",".join(map(str, ids))
