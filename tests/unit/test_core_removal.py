"""When a node knows it was removed (core/removal.py): the rule itself, and the engine applying it
to joint consensus, a removed leader, and a node catching up past its own old removal."""
from __future__ import annotations

import random

from raftlog.core import confchange
from raftlog.core.config import Config
from raftlog.core.messages import ConfState, Message, MessageType
from raftlog.core.rawnode import RawNode, Role
from raftlog.core.removal import knows_removed
from raftlog.core.storage import MemoryStorage
from raftlog.hot import KIND_CONF, RecordBatch

from tests.unit.test_core_rawnode import Cluster

C_12 = ConfState(voters=(1, 2))
C_JOINT = ConfState(voters=(1, 2), voters_outgoing=(1, 2, 3), auto_leave=True)


def test_rule_needs_a_committed_configuration_without_the_node() -> None:
    assert knows_removed(3, C_12, conf_index=5, committed=5, leader_commit=5)
    assert not knows_removed(3, C_12, conf_index=6, committed=5, leader_commit=5)    # not committed yet
    assert not knows_removed(2, C_12, conf_index=5, committed=5, leader_commit=5)    # still a member


def test_rule_keeps_an_outgoing_voter_of_a_joint_configuration() -> None:
    """Dissertation 4.3: in C_old,new the node being removed still votes in the old majority."""
    assert not knows_removed(3, C_JOINT, conf_index=5, committed=9, leader_commit=9)


def test_rule_ignores_the_empty_configuration_of_a_joining_node() -> None:
    assert not knows_removed(4, ConfState(), conf_index=0, committed=0, leader_commit=0)


def test_rule_waits_while_the_leader_has_committed_beyond_the_log() -> None:
    assert not knows_removed(3, C_12, conf_index=5, committed=5, leader_commit=8)


def _remove(cluster: Cluster, node_id: int) -> None:
    leader = cluster.leader()
    leader.propose_conf_change([confchange.change(confchange.REMOVE, node_id)])
    cluster.stabilize()


def test_a_removed_follower_learns_it_once_c_new_commits_and_the_others_do_not() -> None:
    cluster = Cluster(3)
    cluster.nodes[1].campaign()
    cluster.stabilize()
    _remove(cluster, 3)
    assert cluster.nodes[3].removed, cluster.nodes[3].status()
    assert not cluster.nodes[1].removed and not cluster.nodes[2].removed


def test_a_node_is_not_removed_during_the_joint_phase() -> None:
    """Deliver C_old,new and its commit to node 3, but not C_new: it is still an outgoing voter."""
    cluster = Cluster(3)
    cluster.nodes[1].campaign()
    cluster.stabilize()
    cluster.down.add(3)
    _remove(cluster, 3)          # 1 and 2 finish the change; node 3 hears nothing
    cluster.down.discard(3)
    node3 = cluster.nodes[3]
    leader = cluster.nodes[1]
    joint_index = next(i for i, p in confchange.scan_log(leader.raft.log, 1, leader.last_index + 1)
                       if confchange.is_joint(confchange.decode_entry(p)[0]))
    lg = leader.raft.log
    batch = lg.slice(node3.last_index + 1, joint_index + 1, 1 << 30)
    node3.step(Message(MessageType.APPEND, 3, 1, leader.term, lg.term_at(node3.last_index), node3.last_index,
                       joint_index, entries=batch))
    assert confchange.is_joint(node3.conf_state) and node3.commit_index == joint_index
    assert not node3.removed


def test_a_removed_leader_steps_down_and_knows_it_was_removed() -> None:
    """Dissertation 4.2.2: the leader of C_old leads until C_new commits, then steps down."""
    cluster = Cluster(3)
    cluster.nodes[1].campaign()
    cluster.stabilize()
    _remove(cluster, 1)
    old = cluster.nodes[1]
    assert old.role is not Role.LEADER and old.removed, old.status()
    assert not cluster.nodes[2].removed and not cluster.nodes[3].removed


def _conf_entries(prev: ConfState, changes: list[dict]) -> tuple[RecordBatch, ConfState]:
    """The two entries (C_old,new then C_new) of one voter change from `prev`, in term 1."""
    joint = confchange.apply_changes(prev, changes)
    final = confchange.leave_joint(joint)
    payloads = [confchange.encode_entry(joint, prev, changes),
                confchange.encode_entry(final, joint, [{"op": confchange.LEAVE_JOINT}])]
    return RecordBatch.encode(1, KIND_CONF, payloads), final


def _append(prev_index: int, entries: RecordBatch, commit: int) -> Message:
    return Message(MessageType.APPEND, 3, 1, 1, 1 if prev_index else 0, prev_index, commit, entries=entries)


def test_a_node_catching_up_past_its_old_removal_is_not_removed() -> None:
    """Node 3 was removed and added again; replaying the log, its first chunk ends at the removal.

    The leader's commit index in that AppendEntries lies beyond the chunk, so node 3 knows it
    is behind and keeps following; the next chunk brings it back into the configuration.
    """
    node = RawNode(Config(3, (1, 2, 3)), MemoryStorage(), random.Random(3))
    removal, without_3 = _conf_entries(ConfState(voters=(1, 2, 3)), [confchange.change(confchange.REMOVE, 3)])
    node.step(_append(0, removal, commit=4))
    assert node.commit_index == 2 and 3 not in confchange.members(node.conf_state)
    assert not node.removed
    readd, _ = _conf_entries(without_3, [confchange.change(confchange.ADD_VOTER, 3, "127.0.0.1:7003")])
    node.step(_append(2, readd, commit=4))
    assert node.commit_index == 4 and not node.removed


def test_a_node_holding_everything_the_leader_committed_knows_its_removal() -> None:
    node = RawNode(Config(3, (1, 2, 3)), MemoryStorage(), random.Random(3))
    removal, _ = _conf_entries(ConfState(voters=(1, 2, 3)), [confchange.change(confchange.REMOVE, 3)])
    node.step(_append(0, removal, commit=2))
    assert node.removed


class _HoldingCluster(Cluster):
    """Messages to and from `slow` are held, not lost, until `release()`: a slow but connected follower."""

    def __init__(self, n: int, slow: int, **cfg) -> None:
        super().__init__(n, **cfg)
        self.slow, self.hold, self.held = slow, False, []

    def deliver(self, m: Message) -> bool:
        if self.hold and self.slow in (m.to, m.frm):
            self.held.append(m)
            return False
        return super().deliver(m)

    def release(self) -> None:
        self.hold, held, self.held = False, self.held, []
        for m in held:
            self.nodes[m.to].step(m)
        self.stabilize()


def test_a_removed_follower_with_a_full_window_still_gets_its_last_append() -> None:
    """Dissertation 4.2.2: the leader's last AppendEntries to an ex-member carries the commit of C_new.

    With its in-flight window full when C_new commits, that last message must still go out
    (it was dropped as paused, and the ex-member never learned it was out)."""
    from raftlog.hot import KIND_DATA
    c = _HoldingCluster(3, slow=3, max_inflight_msgs=2)
    c.nodes[1].campaign()
    c.stabilize()
    c.hold = True
    leader = c.nodes[1]
    for k in range(4):                               # AppendEntries to node 3 in flight: its window is full
        leader.propose(RecordBatch.encode(0, KIND_DATA, [b"x%d" % k]))
        c.stabilize()
    leader.propose_conf_change([confchange.change(confchange.REMOVE, 3)])
    c.stabilize()
    assert 3 not in leader.raft.progress and 3 not in confchange.members(leader.conf_state)
    c.release()
    n3 = c.nodes[3]
    assert n3.removed, f"node 3: last {n3.last_index} commit {n3.commit_index}, leader commit {leader.commit_index}"
