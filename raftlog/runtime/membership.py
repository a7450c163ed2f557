"""Membership and leadership administration for a running node: the runtime side of issue 7.

Requests. An admin request travels as a client Append whose single record has kind
KIND_CONF and a JSON body (wire/requests.py's admin_request; the server never proposes such
a record as it is). `max_lag` in a promotion waits until the learner is that close.

It is answered with Appended(request_id, index, count): for a change, the index of its
configuration entry once the change is complete (committed, joint phase left), count 1, or
count 0 when the configuration already was so (a retried request); for a transfer, once
the target leads (index 0). While another change is in flight the request waits here, up to
the request timeout, instead of failing. Errors: not-leader (with the leader's address),
bad-request (the change does not fit), timeout.

Peers. Every configuration the engine takes into use carries the members' addresses; the
node hands new ones to the transport (`learn`), so a member added by address is dialed
without any restart, and a node started with `--join` learns the whole cluster from the log.

Joining: joiner.py (a node started with `--join` asks the cluster to add it).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from raftlog.core import confchange
from raftlog.core.messages import ConfState
from raftlog.core.raft import Role
from raftlog.errors import NotLeader, ProposalDropped
from raftlog.hot import ERR_BAD_REQUEST, ERR_NOT_LEADER, ERR_TIMEOUT, RecordBatch, encode_appended
from raftlog.runtime.port import NodePort

if TYPE_CHECKING:
    from raftlog.runtime.connection import Connection

log = logging.getLogger("raftlog.membership")

def changes_for(body: dict) -> list[dict]:
    """The engine's change list for an admin request body; ValueError when malformed."""
    op = body.get("op")
    nid = int(body.get("id", 0))
    if nid <= 0:
        raise ValueError("the request needs a node id > 0")
    if op == "add":
        address = str(body.get("address", ""))
        if not address:
            raise ValueError("adding a member needs its address")
        kind = confchange.ADD_LEARNER if body.get("learner") else confchange.ADD_VOTER
        return [confchange.change(kind, nid, address)]
    if op == "remove":
        return [confchange.change(confchange.REMOVE, nid)]
    if op == "promote":
        return [confchange.change(confchange.PROMOTE, nid)]
    raise ValueError(f"unknown admin operation {op!r}")


def already_done(conf: ConfState, changes: list[dict]) -> bool:
    """True when `conf` already reflects every change (a retried request must not fail)."""
    voters = set(conf.voters) | set(conf.voters_outgoing)
    for ch in changes:
        op, nid = ch["op"], ch["id"]
        if op == confchange.ADD_VOTER or op == confchange.PROMOTE:
            if nid not in conf.voters:
                return False
        elif op == confchange.ADD_LEARNER:
            if nid not in conf.learners and nid not in voters:
                return False
        elif op == confchange.REMOVE:
            if nid in confchange.members(conf):
                return False
    return True


@dataclass
class _Op:
    conn: "Connection"
    request_id: int
    deadline: float
    changes: list = field(default_factory=list)
    transfer_to: int = 0
    max_lag: Optional[int] = None
    index: int = 0            # the configuration entry, once proposed
    term: int = 0
    started: bool = False     # transfer asked of the engine


class Membership:
    """Admin requests of one node's client service, and the addresses its transport dials."""

    def __init__(self, port: NodePort) -> None:
        self.port = port
        self.ops: list[_Op] = []
        self.committed_conf_index = 0     # index of the last configuration entry seen committed
        self.last_committed_conf: Optional[ConfState] = None
        self.removed_logged = False

    # -- requests ---------------------------------------------------------------------------
    def handle(self, conn: "Connection", request_id: int, records: RecordBatch, timeout: float) -> None:
        """An Append whose records are an admin request."""
        try:
            body = json.loads(bytes(records.payload(0)))
            if not isinstance(body, dict):
                raise ValueError("the request must be a JSON object")
            op = _Op(conn, request_id, time.monotonic() + timeout)
            if body.get("op") == "transfer":
                op.transfer_to = int(body.get("to", 0))
                if op.transfer_to <= 0:
                    raise ValueError("a transfer needs the target's id")
            else:
                op.changes = changes_for(body)
                if body.get("op") == "promote" and body.get("max_lag") is not None:
                    op.max_lag = int(body["max_lag"])
        except (ValueError, KeyError, TypeError, confchange.ConfChangeError) as exc:
            self._error(conn, request_id, ERR_BAD_REQUEST, str(exc))
            return
        log.info("node %d: admin request %s", self.port.node_id, body)
        self.ops.append(op)
        self.poll()

    def _error(self, conn: "Connection", request_id: int, code: int, message: str) -> None:
        self.port.error(conn, request_id, code, message)

    def _reply(self, op: _Op, index: int, count: int) -> None:
        self.port.reply(op.conn, encode_appended(op.request_id, index, count))

    def poll(self) -> None:
        """Move every waiting request forward; called after each Ready and from the timer."""
        if not self.ops:
            return
        now = time.monotonic()
        keep = []
        for op in self.ops:
            if op.conn.closed:
                continue
            try:
                done = self._step(op, now)
            except NotLeader:
                self._error(op.conn, op.request_id, ERR_NOT_LEADER, "not the leader")
                done = True
            except (confchange.ConfChangeError, ValueError) as exc:
                self._error(op.conn, op.request_id, ERR_BAD_REQUEST, str(exc))
                done = True
            if not done and now > op.deadline:
                self._error(op.conn, op.request_id, ERR_TIMEOUT,
                            "not completed in time; the outcome is unknown" if op.index or op.started
                            else "another change kept the configuration busy")
                done = True
            if not done:
                keep.append(op)
        self.ops = keep

    def _step(self, op: _Op, now: float) -> bool:
        raw = self.port.raw
        if op.transfer_to:
            return self._step_transfer(op)
        if op.index:
            # Proposed: complete once committed by its term and the joint phase is over.
            lg = raw.raft.log
            if lg.committed >= op.index:
                if lg.term_at(op.index) != op.term:
                    self._error(op.conn, op.request_id, ERR_NOT_LEADER,
                                "the change was replaced by another leader; retry")
                    return True
                last = self.last_committed_conf
                if self.committed_conf_index >= op.index and last is not None and not confchange.is_joint(last):
                    self._reply(op, op.index, 1)
                    return True
            if raw.role is not Role.LEADER and lg.committed < op.index:
                raise NotLeader(raw.leader_id)
            return False
        if raw.role is not Role.LEADER:
            raise NotLeader(raw.leader_id)
        conf = raw.conf_state
        if raw.conf_settled() and already_done(conf, op.changes):
            self._reply(op, raw.commit_index, 0)
            return True
        if not raw.conf_settled():
            return False
        if op.max_lag is not None:
            nid = op.changes[0]["id"]
            pr = raw.raft.progress.get(nid)
            if pr is None or pr.match + op.max_lag < raw.last_index:
                return False
        try:
            op.index, op.term = raw.propose_conf_change(op.changes)
        except ProposalDropped:
            return False
        self.port.kick()
        return False

    def _step_transfer(self, op: _Op) -> bool:
        raw = self.port.raw
        if op.started:
            if raw.leader_id == op.transfer_to:
                self._reply(op, 0, 0)
                return True
            if raw.role is Role.LEADER and raw.raft.lead_transferee == 0:
                self._error(op.conn, op.request_id, ERR_TIMEOUT,
                            f"node {op.transfer_to} did not take over within an election timeout")
                return True
            return False
        if raw.role is not Role.LEADER:
            if raw.leader_id == op.transfer_to:
                self._reply(op, 0, 0)
                return True
            raise NotLeader(raw.leader_id)
        if op.transfer_to == raw.id:
            self._reply(op, 0, 0)
            return True
        raw.transfer_leadership(op.transfer_to)
        op.started = True
        self.port.kick()
        return False

    # -- what the node tells us -------------------------------------------------------------
    def on_committed(self, first: int, batch: RecordBatch) -> None:
        """Committed entries: remember the last configuration entry among them."""
        found = confchange.scan(batch, first)
        if found:
            index, payload = found[-1]
            self.committed_conf_index = index
            self.last_committed_conf = confchange.decode_entry(payload)[0]
            # A member the committed configuration removed is forgotten: added back, it comes
            # with a new data dir whose incarnation is learned at first contact.
            self.port.forget_incarnations_but(confchange.members(self.last_committed_conf))

    def learn(self, conf: ConfState) -> None:
        """The engine took `conf` into use: give the transport every new address; note our own removal."""
        node = self.port
        for nid, address in confchange.address_map(conf).items():
            if nid != node.node_id and node.address_of(nid) != address:
                node.add_peer(nid, address)
                log.info("node %d learned the address of node %d: %s", node.node_id, nid, address)
        everyone = confchange.members(conf)
        if conf.voters and node.node_id not in everyone:
            if not self.removed_logged:
                log.info("node %d is not in the configuration %s (it is out once that commits)", node.node_id,
                         confchange.describe(conf))
                self.removed_logged = True
        else:
            self.removed_logged = False
