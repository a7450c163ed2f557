"""What a running node does once it knows it was removed from the cluster (core/removal.py has the rule).

It stops serving as a member: one INFO line (`node 3 was removed from the cluster (members
1, 2, 4); exiting`), every client request but Status answered with ERR_REMOVED (the error's
leader fields carry this node's id and the members as `ID=HOST:PORT,...`, so a client can go
there), `status` shows the role `removed`, and the node stops (a plain `raftlog node` exits 0)
unless told to stay. An embedded log raises raftlog.Removed instead (raftlog/embed.py).

Pre-vote and check-quorum keep a removed node that stays from disturbing the cluster: its
pre-votes are refused by members that hear from their leader.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from raftlog.core import confchange
from raftlog.errors import removal_line
from raftlog.runtime.port import NodePort

log = logging.getLogger("raftlog.node")


class RemovalWatch:
    """Notices, once, that this node's engine knows it was removed, and says what happens next."""

    def __init__(self, port: NodePort, *, leave: Optional[Callable[[], None]]) -> None:
        """`leave`: called once on removal to stop the node (None: the node stays and refuses requests)."""
        self.port = port
        self.leave = leave
        self.members: Optional[dict[int, str]] = None     # the members once removed, else None
        self._member_of: object = None       # the last configuration seen to name this node

    @property
    def removed(self) -> bool:
        """True while this node knows it was removed (until a configuration names it again)."""
        return self.members is not None

    def check(self) -> None:
        """After each Ready: log the removal once and leave (or stay); a node that stayed and is named again serves."""
        raw = self.port.raw
        conf = raw.conf_state
        if conf is self._member_of:
            return                           # the common case: the same configuration, still a member
        if self.port.node_id in confchange.members(conf):
            self._member_of = conf
            if self.members is not None:
                # It stayed, and its log turned out to be behind (core/removal.py): a later
                # configuration names it again.
                self.members = None
                log.info("node %d is a member again (configuration %s)", self.port.node_id,
                         confchange.describe(conf))
            return
        if self.members is not None or not raw.removed:
            return
        addresses = confchange.address_map(conf)
        self.members = {m: addresses.get(m, self.port.address_of(m)) for m in sorted(confchange.members(conf))}
        line = removal_line(self.port.node_id, self.members)
        log.info("%s; %s", line, "exiting" if self.leave is not None else "staying; requests are refused")
        if self.leave is not None:
            self.leave()

    def refusal(self) -> tuple[int, str, str]:
        """The ERR_REMOVED error's (node id, members as ID=HOST:PORT,..., message). PRECONDITION: removed."""
        assert self.members is not None
        spec = ",".join(f"{m}={a}" for m, a in self.members.items())
        return self.port.node_id, spec, removal_line(self.port.node_id, self.members)
