"""runtime/removal.py: one log line and one leave() per removal, the refusal's fields, and a node
that stayed serving again once a later configuration names it."""
from __future__ import annotations

import logging
import random

from raftlog.core import confchange
from raftlog.core.config import Config
from raftlog.core.messages import ConfState
from raftlog.core.rawnode import RawNode
from raftlog.core.storage import MemoryStorage
from raftlog.runtime.removal import RemovalWatch

from tests.unit.test_core_removal import _append, _conf_entries


class _Port:
    """The part of NodePort RemovalWatch uses: the id, the engine, addresses."""

    def __init__(self, raw: RawNode) -> None:
        self.node_id = raw.id
        self.raw = raw

    def address_of(self, node_id: int) -> str:
        return ""


def test_removal_is_acted_on_once_and_undone_when_the_node_is_named_again(caplog) -> None:
    raw = RawNode(Config(3, (1, 2, 3), addresses=((1, "h:1"), (2, "h:2"), (3, "h:3"))), MemoryStorage(),
                  random.Random(3))
    left: list[int] = []
    watch = RemovalWatch(_Port(raw), leave=lambda: left.append(1))
    watch.check()
    assert not watch.removed
    removal, without_3 = _conf_entries(raw.conf_state, [confchange.change(confchange.REMOVE, 3)])
    raw.step(_append(0, removal, commit=2))
    with caplog.at_level(logging.INFO, logger="raftlog.node"):
        watch.check()
        watch.check()
    assert watch.removed and left == [1]
    assert caplog.text.count("node 3 was removed from the cluster (members 1, 2); exiting") == 1
    assert watch.refusal() == (3, "1=h:1,2=h:2", "node 3 was removed from the cluster (members 1, 2)")
    readd, _ = _conf_entries(without_3, [confchange.change(confchange.ADD_VOTER, 3, "h:3")])
    raw.step(_append(2, readd, commit=4))
    watch.check()
    assert not watch.removed and left == [1]


def test_a_joint_configuration_keeps_the_outgoing_voter_serving() -> None:
    raw = RawNode(Config(3, (1, 2, 3)), MemoryStorage(), random.Random(3))
    watch = RemovalWatch(_Port(raw), leave=None)
    joint = confchange.apply_changes(ConfState(voters=(1, 2, 3)), [confchange.change(confchange.REMOVE, 3)])
    removal, _ = _conf_entries(ConfState(voters=(1, 2, 3)), [confchange.change(confchange.REMOVE, 3)])
    raw.step(_append(0, removal.slice(0, 1), commit=1))
    assert raw.conf_state == joint
    watch.check()
    assert not watch.removed
