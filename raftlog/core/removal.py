"""When a node knows it was removed from the cluster: the rule, as a pure function.

A server uses the latest configuration in its log (dissertation 4.1), committed or not, so a
configuration that leaves a node out does not yet mean the node is out: the entry may be
truncated by the next leader and the old configuration restored. During a joint change the
node is still an outgoing voter of C_old,new (dissertation 4.3) and must keep voting. The
node is out only once a configuration without it is committed: the leader then forgets it
(Raft.maybe_finish_conf sends it one last AppendEntries carrying the commit index, past its
flow-control window, so that it learns it), and a removed leader steps down (dissertation 4.2.2).

One more condition keeps a node that is catching up from misreading its own history. A
node that was removed and later added again under the same id, replaying the log from an
early index, meets the committed removal before the re-addition arrives; the leader's
commit index in the AppendEntries that brought the removal lies beyond the node's log then.
So the rule also asks that the node hold every entry the leader said was committed: a node
that is behind is not told it was removed by its own old entries.
"""
from __future__ import annotations

from raftlog.core import confchange
from raftlog.core.messages import ConfState


def knows_removed(node_id: int, conf: ConfState, conf_index: int, committed: int, leader_commit: int) -> bool:
    """True only when `conf` (the latest configuration in the log, from entry `conf_index`, 0 when it
    is older than the log's uncommitted part) leaves `node_id` out, is committed, and the node holds
    every entry up to `leader_commit` (the highest commit index a leader sent it).

    A configuration with no voters is the empty one of a node started to join: that node was
    never a member and is not "removed".
    """
    if not conf.voters or node_id in confchange.members(conf):
        return False
    return conf_index <= committed and leader_commit <= committed
