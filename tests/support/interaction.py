"""A lock-step network of RawNodes on MemoryStorage, and a stable text form of what they do.

The rule tests (test_core_paper.py) drive `Network` step by step; the interaction scripts
(test_interaction.py, tests/unit/interaction/*.txt) replay commands against it and compare the
text it prints. Nothing here changes how the engine behaves: every Ready is persisted in
one `storage.save`, its `messages` and `persisted_messages` are queued for their
recipients (in that order: the write is synchronous), its committed entries are recorded
as applied, then it is advanced. Messages wait in per-recipient inboxes until delivered.

Text form (what the scripts compare): a log position or entry is `index@term`; an entry
is followed by its kind (`noop`, `data "payload"`, `conf(<resulting configuration>)`); a
message is `from->to TYPE term=T` followed by its non-default fields (`log_term`, `index`,
`commit`, `reject`, `hint_index`, `hint_term`, a heartbeat's `round`, `context`, `entries`).
"""
from __future__ import annotations

import random
from typing import Callable, Iterable, Optional, Sequence

from raftlog.core import confchange
from raftlog.core.config import Config
from raftlog.core.messages import ConfState, HardState, Message, MessageType
from raftlog.core.rawnode import RawNode, Ready, Role
from raftlog.core.readonly import ReadState, decode_round
from raftlog.hot import KIND_CONF, KIND_DATA, KIND_NOOP, RecordBatch
from raftlog.core.storage import MemoryStorage

__all__ = ["Network", "preloaded_storage", "format_message", "format_ready",
           "format_entries", "log_terms", "log_runs"]

_KIND_NAMES = {KIND_DATA: "data", KIND_NOOP: "noop", KIND_CONF: "conf"}


def preloaded_storage(terms: Sequence[int], term: int = 0, vote: int = 0, commit: int = 0,
                      conf: Optional[ConfState] = None) -> MemoryStorage:
    """A MemoryStorage holding one data entry per item of `terms` (entry i+1 has term terms[i]) and that hard state.

    The stored term is at least the highest entry term. Payloads are `v<index>.<term>`, so an
    entry replaced by one of another term shows it.
    """
    storage = MemoryStorage(conf)
    records = None
    if terms:
        records = RecordBatch.concat([RecordBatch.encode(t, KIND_DATA, [b"v%d.%d" % (i, t)])
                                      for i, t in enumerate(terms, start=1)])
    storage.save(hard_state=HardState(max(term, *terms) if terms else term, vote, commit),
                 first_index=1 if records is not None else 0, records=records)
    return storage


def log_terms(node: RawNode) -> list[int]:
    """The term of every entry in the node's log, from index 1 (the engine's view, written or not)."""
    lg = node.raft.log
    return [lg.term_at(i) for i in range(1, lg.last_index + 1)]


def log_runs(node: RawNode) -> list[tuple[int, RecordBatch]]:
    """The node's whole log as `(first_index, batch)` runs (memory and storage, as the engine reads it)."""
    lg = node.raft.log
    runs = []
    pos = lg.first_index
    while pos <= lg.last_index:
        for first, batch in lg.segments(pos, lg.last_index + 1, 1 << 62):
            runs.append((first, batch))
            pos = first + len(batch)
    return runs


class Network:
    """RawNodes with instant delivery on demand; `isolated` nodes lose every message to or from them.

    `trace`, when given, receives the text form of every Ready handled and message delivered.
    """

    def __init__(self, trace: Optional[list[str]] = None) -> None:
        self.nodes: dict[int, RawNode] = {}
        self.storage: dict[int, MemoryStorage] = {}
        self.configs: dict[int, Config] = {}
        self.inbox: dict[int, list[Message]] = {}
        self.applied: dict[int, list[tuple[int, int, int, bytes]]] = {}
        self.read_states: dict[int, list[ReadState]] = {}
        self.sent: list[Message] = []          # every message a Ready handed out, in order
        self.isolated: set[int] = set()
        self.trace = trace

    # -- membership of the test network ------------------------------------------------

    def add_node(self, node_id: int, voters: Sequence[int] = (), learners: Sequence[int] = (),
                 storage: Optional[MemoryStorage] = None, **cfg) -> RawNode:
        """Start node `node_id` on `storage` (new when None; with `learners`, it stores voters and learners).

        `cfg` are Config fields; the node's rng is seeded with its id, so runs repeat exactly.
        """
        if storage is None:
            conf = ConfState(tuple(voters), tuple(learners)) if learners else None
            storage = MemoryStorage(conf)
        self.storage[node_id] = storage
        self.configs[node_id] = Config(node_id, tuple(voters), **cfg)
        self.inbox.setdefault(node_id, [])
        self.applied.setdefault(node_id, [])
        self.read_states.setdefault(node_id, [])
        self.nodes[node_id] = RawNode(self.configs[node_id], storage, random.Random(node_id))
        return self.nodes[node_id]

    def add_nodes(self, ids: Iterable[int], **kw) -> None:
        """add_node for each id with the same arguments."""
        for i in ids:
            self.add_node(i, **kw)

    def restart(self, node_id: int) -> RawNode:
        """Replace node `node_id` by a new RawNode on the same storage (a crash loses what was not persisted).

        Messages still in its inbox are lost too; the state machine keeps what it applied.
        """
        old = self.configs[node_id]
        cfg = Config(**{**old.__dict__, "applied": self.nodes[node_id].applied_index})
        self.configs[node_id] = cfg
        self.inbox[node_id] = []
        self.nodes[node_id] = RawNode(cfg, self.storage[node_id], random.Random(node_id))
        return self.nodes[node_id]

    # -- driving -----------------------------------------------------------------------

    def tick(self, node_id: int, count: int = 1) -> None:
        """`count` ticks of node `node_id`'s clock."""
        for _ in range(count):
            self.nodes[node_id].tick()

    def persist(self, node_id: int, rd: Ready) -> None:
        """Write what `rd` asks to store, in one save (snapshots are outside this harness)."""
        if rd.snapshot_chunks or rd.snapshot is not None:
            raise AssertionError("the interaction harness does not handle snapshots")
        self.storage[node_id].save(hard_state=rd.hard_state, truncate_from=rd.truncate_from,
                                   first_index=rd.entries_index, records=rd.entries,
                                   conf_state=rd.conf_state)

    def queue(self, messages: Iterable[Message]) -> None:
        """Put messages in their recipients' inboxes (and record them in `sent`)."""
        for m in messages:
            self.inbox.setdefault(m.to, []).append(m)
            self.sent.append(m)

    def process_ready(self, node_id: int) -> Optional[Ready]:
        """Handle node `node_id`'s Ready as a runtime would (persist, send, apply, advance); None when it has none.

        Applied entries and released reads are recorded in `applied` and `read_states`.
        """
        node = self.nodes[node_id]
        if not node.has_ready():
            return None
        rd = node.ready()
        if self.trace is not None:
            self.trace.extend(format_ready(node_id, rd))
        self.persist(node_id, rd)
        self.queue(rd.messages)
        self.queue(rd.persisted_messages)
        for first, batch in rd.committed:
            self.applied[node_id].extend(batch.entries(first))
        self.read_states[node_id].extend(rd.read_states)
        node.advance(rd)
        return rd

    def deliver(self, node_id: int, keep: Callable[[Message], bool] = lambda m: True,
                rewrite: Callable[[Message], Message] = lambda m: m) -> list[Message]:
        """Step every message waiting for `node_id`; the delivered ones (after `rewrite`).

        A message to or from an isolated node, or one `keep` refuses, is dropped.
        """
        waiting, self.inbox[node_id] = self.inbox.get(node_id, []), []
        if not waiting:
            return []
        if self.trace is not None:
            self.trace.append(f"> {node_id} receiving messages")
        delivered = []
        for m in waiting:
            lost = m.to in self.isolated or m.frm in self.isolated or not keep(m)
            if not lost:
                m = rewrite(m)
            if self.trace is not None:
                self.trace.append("  " + format_message(m) + (" (dropped)" if lost else ""))
            if not lost:
                self.nodes[node_id].step(m)
                delivered.append(m)
        return delivered

    def drop(self, node_id: int) -> list[Message]:
        """Discard every message waiting for `node_id`; the discarded ones."""
        waiting, self.inbox[node_id] = self.inbox.get(node_id, []), []
        if waiting and self.trace is not None:
            self.trace.append(f"> {node_id} dropping messages")
            self.trace.extend("  " + format_message(m) for m in waiting)
        return waiting

    def stabilize(self, ids: Optional[Iterable[int]] = None, max_rounds: int = 200) -> None:
        """Handle Readies and deliver messages among `ids` (all nodes) until nothing moves."""
        chosen = sorted(ids) if ids is not None else sorted(self.nodes)
        for _ in range(max_rounds):
            moved = False
            for i in chosen:
                moved |= self.process_ready(i) is not None
            for i in chosen:
                if self.inbox.get(i):
                    self.deliver(i)
                    moved = True
            if not moved:
                return
        raise AssertionError(f"no quiescence within {max_rounds} rounds: {self.state_lines()}")

    def leader(self) -> int:
        """The id of the one node that is leader (AssertionError when there is not exactly one)."""
        leaders = [i for i, n in self.nodes.items() if n.role is Role.LEADER]
        assert len(leaders) == 1, self.state_lines()
        return leaders[0]

    # -- text form -----------------------------------------------------------------------

    def state_lines(self, ids: Optional[Iterable[int]] = None) -> list[str]:
        """One line per node: role, term, vote, leader, commit, applied, last index, configuration."""
        out = []
        for i in sorted(ids) if ids is not None else sorted(self.nodes):
            s = self.nodes[i].status()
            out.append(f"{i}: {s['role']} term={s['term']} vote={s['vote']} leader={s['leader']} "
                       f"commit={s['commit']} applied={s['applied']} last={s['last_index']} "
                       f"{confchange.describe(self.nodes[i].conf_state)}")
        return out

    def log_lines(self, ids: Optional[Iterable[int]] = None) -> list[str]:
        """One line per node: every entry of its log (the engine's view), `(empty)` when none."""
        out = []
        for i in sorted(ids) if ids is not None else sorted(self.nodes):
            runs = log_runs(self.nodes[i])
            out.append(f"{i}: " + (", ".join(format_entries(first, b) for first, b in runs) or "(empty)"))
        return out

    def progress_lines(self, node_id: int) -> list[str]:
        """The leader's view of every member's log: match, next, replication state."""
        status = self.nodes[node_id].status()
        if "progress" not in status:
            return [f"{node_id} is not the leader"]
        return [f"{p}: match={pr['match']} next={pr['next']} {pr['state']} inflight={pr['inflight']}"
                for p, pr in sorted(status["progress"].items(), key=lambda kv: int(kv[0]))]


def _payload_text(payload: bytes) -> str:
    """A short stable form of a payload: quoted when printable ASCII, else its length."""
    raw = bytes(payload)
    if all(32 <= b < 127 and b != 34 for b in raw):
        return '"' + raw.decode() + '"'
    return f"<{len(raw)} bytes>"


def format_entries(first_index: int, batch: RecordBatch) -> str:
    """`index@term kind ...` for every entry of `batch`, comma separated."""
    parts = []
    for index, term, kind, payload in batch.entries(first_index):
        name = _KIND_NAMES.get(kind, f"kind{kind}")
        if kind == KIND_DATA:
            name += " " + _payload_text(payload)
        elif kind == KIND_CONF:
            name += f"({confchange.describe(confchange.decode_entry(payload)[0])})"
        parts.append(f"{index}@{term} {name}")
    return ", ".join(parts)


def format_message(m: Message) -> str:
    """The one-line text form of a message (see the module docstring)."""
    text = f"{m.frm}->{m.to} {MessageType(m.type).name} term={m.term}"
    for name in ("log_term", "index", "commit", "hint_index", "hint_term"):
        value = getattr(m, name)
        if value:
            text += f" {name}={value}"
    if m.reject:
        text += " reject"
    if m.context:
        if m.type in (MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP) and decode_round(m.context):
            text += f" round={decode_round(m.context)}"
        else:
            text += f" context={_payload_text(m.context)}"
    if m.entries is not None and len(m.entries):
        text += f" entries=[{format_entries(m.index + 1, m.entries)}]"
    return text


def format_ready(node_id: int, rd: Ready) -> list[str]:
    """The text form of node `node_id`'s Ready: a header line, then one indented line per part present."""
    out = [f"> {node_id} handling Ready" + (" (must_sync)" if rd.must_sync else "")]
    if rd.soft_state is not None:
        s = rd.soft_state
        out.append(f"  soft_state: {s.role} leader={s.leader} term={s.term}")
    if rd.hard_state is not None:
        h = rd.hard_state
        out.append(f"  hard_state: term={h.term} vote={h.vote} commit={h.commit}")
    if rd.truncate_from:
        out.append(f"  truncate_from: {rd.truncate_from}")
    if rd.entries is not None:
        out.append(f"  entries: {format_entries(rd.entries_index, rd.entries)}")
    if rd.conf_state is not None:
        out.append(f"  conf_state: {confchange.describe(rd.conf_state)}")
    for label, msgs in (("messages", rd.messages), ("persisted_messages", rd.persisted_messages)):
        if msgs:
            out.append(f"  {label}:")
            out.extend("    " + format_message(m) for m in msgs)
    if rd.committed:
        out.append("  committed: " + ", ".join(format_entries(first, b) for first, b in rd.committed))
    for state in rd.read_states:
        out.append(f"  read_state: index={state.index} context={_payload_text(state.ctx)}")
    return out
