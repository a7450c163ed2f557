"""The node loop: RawNode driven by a real clock, LmdbStorage and the transport.

One Ready at a time, in the order the engine's contract demands:

1. `ready.messages` go out at once (a leader's AppendEntries overlap its own write);
2. everything the Ready asks to persist (truncation, entries, hard state) is one LMDB write
   transaction, run by the write path (runtime/writer.py: the writer thread; inline for a
   follower's small writes and a sole member's writes, see Node._inline; commit-only hard
   states riding along; disk full);
3. when the write is durable, `ready.persisted_messages` go out (votes and acknowledgements
   only ever describe durable state, docs/architecture.md section 2), committed batches are applied
   (pending client requests answered), and `advance` is called. After an inline write the
   same pass applies what it let commit and takes the next Ready (Node._pump); a Ready that
   would only move the commit index waits for the next write to carry it.

Proposals and messages that arrive while a write is in flight go into the engine at once;
the next Ready carries all of them, so they share the next transaction (group commit). A
transaction takes at most WRITE_BATCH_ENTRIES / WRITE_BATCH_BYTES (the rest waits for the
next one).
Measured on the 2-core dev box, 3 local processes, fsync on: ~400K entries/s durable with
append_many of 100-byte payloads, 1.7 ms for one append (leader write + follower write + RTT).
"""
from __future__ import annotations

import asyncio
import io
import logging
import os
import random
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from raftlog.core import confchange
from raftlog.core.config import Config
from raftlog.core.messages import Message
from raftlog.core.rawnode import RawNode, Role
from raftlog.core.messages import SnapshotMeta
from raftlog.errors import CorruptLogError
from raftlog.hot import ERR_NOT_LEADER, encode_error
from raftlog.runtime.connection import Connection
from raftlog.runtime.listener import Listener
from raftlog.core.incarnations import IncarnationBook
from raftlog.runtime.leadership import LeaderWatch
from raftlog.runtime.membership import Membership
from raftlog.runtime.peer_transport import PeerTransport
from raftlog.wire.addresses import parse_address
from raftlog.runtime.port import Joining, NodePort
from raftlog.runtime.proposals import Proposals
from raftlog.runtime.reads import Reads
from raftlog.runtime.removal import RemovalWatch
from raftlog.runtime.replies import send_reply
from raftlog.runtime.server import ClientService
from raftlog.runtime.sessions import SessionService, unwrap_snapshot, wrap_snapshot
from raftlog.runtime.retention import Retention
from raftlog.runtime.snapshots import Snapshotter
from raftlog.runtime.health import Liveness
from raftlog.runtime.stats import NodeStats
from raftlog.storage.datadir import dir_bytes
from raftlog.runtime.writer import INLINE_WRITE_ENTRIES, Writer

log = logging.getLogger("raftlog.node")

TICK_SECONDS = 0.010          # one engine tick (docs/architecture.md section 4)
MAX_CATCHUP_TICKS = 5         # after a stall (SIGSTOP, GC) replay at most this many ticks
# Entries that one Ready (one transaction) may carry, roughly. py-lmdb's putmulti holds the
# GIL while it inserts: with one putmulti per save, 100,000 records of 117 B blocked the event
# loop ~280 ms and unbounded group commits under load set off elections. LmdbStorage now
# feeds putmulti in chunks (stalls of a few ms), and the budget still bounds how much one
# transaction (and the memory waiting for it) holds; 32768 measured no faster than 8192.
# Beyond the budget, proposals wait in the client service and AppendEntries in `_deferred`
# until the next Ready is taken.
WRITE_BATCH_ENTRIES = 8192
WRITE_BATCH_BYTES = 4 << 20
DEFAULT_PROMOTE_LAG = 64      # a joined learner within this many entries of the leader is promoted
READY_PASSES = 4              # Readies one pump takes back to back (see Node._pump)
SOLE_LEADER_TICKS = 10        # a sole leader's tick timer fires every this many ticks (see Node._tick_step)


@dataclass
class NodeConfig:
    """Everything `raftlog node` needs; `peers` names every member, this node included."""

    node_id: int
    peers: dict[int, str]
    data_dir: str
    cluster_id: str = "raftlog"
    sync: bool = True
    election_timeout_ms: tuple[int, int] = (150, 300)   # randomized in [lo, hi)
    heartbeat_ms: int = 50
    request_timeout: float = 10.0
    engine_options: dict[str, Any] = field(default_factory=dict)   # extra Config fields
    # Snapshots (only for a node running an application state machine: raftlog.embed):
    # every N applied entries or bytes (0 = never), keeping a tail of entries below it.
    snapshot_every: int = 100_000
    snapshot_bytes: int = 64 << 20
    snapshot_tail: int = 10_000
    listen: bool = True               # False: no port at all (a single embedded node)
    # Membership (issue 7): `join` is a member's HOST:PORT to ask for admission (then `peers`
    # names only this node); the joined learner is promoted once within `promote_lag` entries.
    join: Optional[str] = None
    promote: bool = True
    promote_lag: int = DEFAULT_PROMOTE_LAG
    transfer_on_stop: bool = True     # a leader hands over leadership before a clean shutdown
    # Issue 8: mutual TLS on every connection (wire/tls.py) and/or a shared secret proved
    # by HMAC challenge-response in the handshake (wire/auth.py).
    tls: Any = None                   # a raftlog.wire.tls.TlsFiles, or None
    secret: Optional[bytes] = None
    # Issue 15: HOST:PORT serving Prometheus /metrics and /health (runtime/metrics.py); None: off.
    metrics: Optional[str] = None
    # Issue 15: once a committed configuration leaves this node out, stop (the plain node
    # exits 0) or stay and refuse requests (runtime/removal.py).
    exit_when_removed: bool = False
    # Issue 15: how much of the log a node without a state machine keeps (runtime/retention.py's
    # RetentionPolicy; None: everything).
    retention: Any = None

    @property
    def address(self) -> str:
        """This node's own HOST:PORT."""
        return self.peers[self.node_id]

    def engine_config(self, applied: int = 0) -> Config:
        """The RawNode Config: milliseconds turned into ticks of TICK_SECONDS."""
        tick_ms = TICK_SECONDS * 1000
        lo, hi = self.election_timeout_ms
        lo_t = max(2, round(lo / tick_ms))
        hi_t = max(lo_t + 1, round(hi / tick_ms))
        hb = max(1, round(self.heartbeat_ms / tick_ms))
        voters = () if self.join else tuple(sorted(self.peers))
        return Config(node_id=self.node_id, voters=voters, election_ticks=(lo_t, hi_t),
                      heartbeat_ticks=hb, applied=applied, addresses=tuple(sorted(self.peers.items())),
                      join=bool(self.join), **self.engine_options)


def open_storage(cfg: NodeConfig) -> Any:
    """Open (or create) the node's LMDB data dir; IdentityMismatch if it belongs to another node or cluster."""
    from raftlog.storage.lmdb import LmdbStorage
    return LmdbStorage.open(cfg.data_dir, node_id=cfg.node_id, cluster_id=cfg.cluster_id, sync=cfg.sync)


class Node:
    """One running member: its engine, its storage, its port. `await start()`, then `await stop()`.

    It implements NodePort (runtime/port.py) for its services, and is the only one that hands
    them committed entries, read states and polls.
    """

    def __init__(self, cfg: NodeConfig, *, storage: Any = None, rng: Optional[random.Random] = None,
                 app: Any = None, joiner: Optional[Callable[[NodePort], Joining]] = None) -> None:
        """`joiner`: how to join when `cfg.join` is set (raftlog.joiner.joiner_for(cfg))."""
        if cfg.join and joiner is None:
            raise ValueError("a node started with join= needs joiner= (raftlog.joiner.joiner_for)")
        self.cfg = cfg
        if cfg.metrics:
            from raftlog.runtime.metrics import require_prometheus
            require_prometheus()              # one clear line before anything is opened
        self._make_joiner = joiner
        self.app = app                        # an Application (runtime/snapshots.py), or None: the log is the product
        self.node_id = cfg.node_id
        self._storage_arg = storage
        self._rng = rng or random.Random(int.from_bytes(os.urandom(8), "big"))
        self.storage: Any = None
        self.raw: Any = None
        self.peers: Optional[PeerTransport] = None
        self.listener: Optional[Listener] = None
        self.proposals = Proposals(self, on_backlog=self._on_backlog)
        self.membership = Membership(self)
        self.reads = Reads(self, cfg.request_timeout)
        self.sessions = SessionService(self, self.proposals)
        self.removal = RemovalWatch(self, leave=self.request_stop if cfg.exit_when_removed else None)
        self.leadership = LeaderWatch()
        self.service = ClientService(self, self.proposals, self.sessions, self.membership, self.reads,
                                     request_timeout=cfg.request_timeout, removal=self.removal)
        stateful = app is not None and app.stateful
        retains = not stateful and cfg.retention is not None and cfg.retention.active
        # Without a state machine, only retention (or an explicit take_now) snapshots the log:
        # the automatic every-N trigger would compact below what the limits keep.
        self.snapshots = Snapshotter(self, self._capture if stateful else self._capture_sessions if retains else None,
                                     every_entries=cfg.snapshot_every if stateful else 0,
                                     every_bytes=cfg.snapshot_bytes if stateful else 0,
                                     tail_entries=cfg.snapshot_tail)
        self.retention = Retention(self, self.proposals, self.snapshots, cfg.retention) if retains else None
        self.joiner: Optional[Joining] = None
        self.applied_index = 0
        self.writer: Optional[Writer] = None      # the write path, once storage is open
        self._kick_scheduled = False
        self._tick_handle: Optional[asyncio.TimerHandle] = None
        self._tick_origin = 0.0
        self._ticks = 0
        self._stopping = False
        self._stopped: Optional[asyncio.Event] = None
        self._failure: Optional[BaseException] = None
        self._shown: tuple = (None, 0, 0)     # (role, leader, term) last logged
        self._alone_conf: Any = None            # the configuration _alone() last looked at
        self._alone_now = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        # Metrics (cfg.metrics): counted only while served; None otherwise (runtime/metrics.py).
        self.stats: Optional[NodeStats] = None
        self.liveness: Optional[Liveness] = None
        self.metrics_server: Any = None
        self.corrupt_index: Optional[int] = None   # a stored entry that failed its CRC when read
        self.unwritten_entries = 0            # entries fed to the engine since the last ready()
        self.unwritten_bytes = 0
        self._deferred: deque[Message] = deque()   # AppendEntries held back by the write budget

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Open storage, build the engine, listen on our address and start dialing peers."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self.storage = self._storage_arg if self._storage_arg is not None else open_storage(self.cfg)
        try:
            # The log is the state machine: whatever was durably committed before a restart
            # counts as applied, so the engine does not hand the whole log out again.
            applied = self.storage.hard_state().commit
            restored_sessions = None
            if self.app is not None and self.app.stateful:
                # An application's state is not durable by itself: restore its snapshot and
                # let the engine hand out the log tail after it again.
                meta = self.storage.snapshot_meta()
                restored_sessions = self._restore_app(meta)
                applied = meta.index
            elif self.storage.snapshot_meta().index:
                restored_sessions = self._snapshot_sessions(self.storage.snapshot_meta())
            self.raw = RawNode(self.cfg.engine_config(applied), self.storage, self._rng)
            self.applied_index = self.raw.applied_index
            self.sessions.rebuild(restored_sessions)
            if self.retention is not None:
                self.retention.rebuild()
            self._shown = (self.raw.role, self.raw.leader_id, self.raw.term)
            # The log's configuration (replicated with every change), not --peers, names the
            # members and their addresses; a difference is one WARNING line (runtime/peer_check.py).
            from raftlog.runtime.peer_check import use_log_peers
            self.cfg.peers = use_log_peers(self.node_id, self.cfg.peers, self.raw.conf_state, warn=not self.cfg.join)
            # The incarnations known for the peers (raftlog.core.incarnations). A learned one is
            # saved by the transport directly, on the loop thread: a small meta put under the
            # storage's write lock (serialised with the writer thread's transactions, and no
            # Ready write touches that key), rare (a first contact, a removal), and durable
            # before the connection is used.
            identity = getattr(self.storage, "identity", None)
            self.peers = PeerTransport(self.node_id, self.cfg.cluster_id, self.cfg.peers, self._on_message,
                                       self._on_peer, rng=self._rng, tls=self.cfg.tls, secret=self.cfg.secret,
                                       incarnation=identity().incarnation if identity is not None else 0,
                                       book=IncarnationBook(self.storage.incarnations()),
                                       save_book=self.storage.save_incarnations)
            self.listener = Listener(self.node_id, self.cfg.cluster_id, self.peers, self.service.handler_for,
                                     tls=self.cfg.tls, secret=self.cfg.secret)
            if self.cfg.listen:
                host, port = parse_address(self.cfg.address)
                await self.listener.start(host, port)
            if self.cfg.metrics:
                await self._serve_metrics(self.cfg.metrics)
        except BaseException:
            self.storage.close()
            raise
        self.writer = Writer(self.node_id, self.cfg.data_dir, self.storage, self._loop, on_durable=self._finish,
                             on_failure=self._fail, kick=self.kick, stopping=lambda: self._stopping)
        self.writer.stats = self.stats
        if self.cfg.join:
            self.peers.accept_unknown = True    # we learn the members from the log
        self.peers.start()
        if self._make_joiner is not None and self.cfg.join:
            self.joiner = self._make_joiner(self)
            self.joiner.start()
        self._tick_origin = time.monotonic()
        self._schedule_tick()
        log.info("node %d listening on %s (cluster %s, term %d, last index %d, commit %d)", self.node_id,
                 self.cfg.address, self.cfg.cluster_id, self.raw.term, self.raw.last_index, self.raw.commit_index)
        self.kick()

    async def _serve_metrics(self, address: str) -> None:
        """Start counting and serve /metrics and /health on `address` (the listener is closed if that fails)."""
        from raftlog.runtime.metrics import serve_metrics
        try:
            self.metrics_server = await serve_metrics(self, address)
        except BaseException:
            assert self.listener is not None
            await self.listener.close()
            raise
        log.info("node %d serving metrics on http://%s/metrics and /health", self.node_id, self.metrics_server.bound)

    async def wait_stopped(self) -> None:
        """Return once the node has stopped (stop() called, or a fatal storage error)."""
        assert self._stopped is not None
        await self._stopped.wait()
        if self._failure is not None:
            raise self._failure

    def request_stop(self) -> None:
        """Signal-handler friendly: begin a clean shutdown."""
        if self._loop is not None and not self._stopping:
            self._loop.create_task(self.stop())

    async def stop(self) -> None:
        """Shut down cleanly: stop serving, let the in-flight transaction finish, close LMDB."""
        if self._stopping:
            assert self._stopped is not None
            await self._stopped.wait()
            return
        if self.cfg.transfer_on_stop and self.raw is not None and self._failure is None:
            await self._hand_over()
        if self._failure is None and self.writer is not None and not self.writer.busy:
            self._pump_safely(commit=True)     # the last commit index too, for writer.close to save
        self._stopping = True
        log.info("node %d shutting down", self.node_id)
        self.leadership.close()
        if self.joiner is not None:
            await self.joiner.stop()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self.proposals.shutdown()      # answered before the client connections close
        self.service.shutdown()
        self.reads.shutdown()
        if self.listener is not None:
            await self.listener.close()
        if self.metrics_server is not None:
            await self.metrics_server.close()
        if self.peers is not None:
            await self.peers.close()
        if self.writer is not None:
            await self.writer.close(save_deferred=self._failure is None)
        self.snapshots.close()
        if self.storage is not None:
            self.storage.close()
        log.info("node %d stopped", self.node_id)
        assert self._stopped is not None
        self._stopped.set()

    async def _hand_over(self) -> None:
        """A leader about to stop transfers leadership to its most up-to-date voter first (diss. 3.10).

        Waits at most one election timeout; the cluster then needs no election timeout of
        its own to notice the leader is gone.
        """
        raw = self.raw
        if str(raw.role) != "leader":
            return
        target = raw.raft.best_transferee() or next(
            (v for v in raw.raft.all_voters if v != self.node_id and self.peers is not None
             and self.peers.connected(v)), 0)
        if not target:
            return
        try:
            raw.transfer_leadership(target)
        except Exception as exc:
            log.info("node %d: no leadership transfer before shutdown: %s", self.node_id, exc)
            return
        self.kick()
        deadline = time.monotonic() + self.cfg.election_timeout_ms[1] / 1000
        while time.monotonic() < deadline and str(raw.role) == "leader":
            await asyncio.sleep(0.01)
        if str(raw.role) != "leader":
            log.info("node %d handed leadership to node %d before shutting down", self.node_id, target)

    # -- inputs -----------------------------------------------------------------------------
    def _on_message(self, msg: Message) -> None:
        if self._stopping:
            return
        entries = msg.entries
        if self.stats is not None and self.liveness is not None:
            now = time.monotonic()
            self.liveness.heard(msg.frm, now)
            self.stats.message_in(msg, now)
        if entries is not None and len(entries):
            if self._deferred or not self.write_budget_left():
                # Held back, in order, until the next Ready is taken. Other messages (heartbeats,
                # votes, responses) may overtake it: Raft tolerates reordering (paper 5.3).
                self._deferred.append(msg)
                return
            self.note_unwritten(len(entries), entries.nbytes)
        self._step(msg)
        self.kick()

    def _step(self, msg: Message) -> None:
        try:
            self.raw.step(msg)
        except CorruptLogError as exc:
            # Answering it (an AppendEntries response or heartbeat response) made the leader
            # read an evicted entry back from disk, which failed its CRC: stop, as in _pump.
            self._stop_on_corrupt(exc)
        except Exception as exc:   # a malformed message must not take the node down
            log.warning("node %d: dropping message %s from %d: %s", self.node_id, msg.type, msg.frm, exc)
            log.debug("step failed", exc_info=True)

    def write_budget_left(self) -> bool:
        """True while the next transaction may take more entries (always true for the first)."""
        return self.unwritten_entries == 0 or (self.unwritten_entries < WRITE_BATCH_ENTRIES
                                               and self.unwritten_bytes < WRITE_BATCH_BYTES)

    def note_unwritten(self, count: int, nbytes: int) -> None:
        """Count entries handed to the engine (proposed or stepped) against the write budget."""
        self.unwritten_entries += count
        self.unwritten_bytes += nbytes

    def _refill(self) -> None:
        """A Ready was taken: the budget is fresh; feed held-back AppendEntries, then waiting proposals."""
        self.unwritten_entries = 0
        self.unwritten_bytes = 0
        deferred = self._deferred
        while deferred and self.write_budget_left():
            msg = deferred.popleft()
            self.note_unwritten(len(msg.entries), msg.entries.nbytes)
            self._step(msg)
        self._after_apply()

    def _on_peer(self, peer_id: int, up: bool) -> None:
        """The transport's connection to `peer_id` came up or went down."""
        if not up and self.raw is not None:
            self.raw.report_unreachable(peer_id)
            self.kick()

    def _tick_step(self) -> int:
        """Ticks per wake-up of the tick timer: one, or SOLE_LEADER_TICKS for a leader alone in its configuration.

        A sole leader's ticks time nothing that needs 10 ms precision (no heartbeats to
        send, no election to lose), while every wake-up of an idle event loop costs CPU
        (~0.2 ms each on the 2-core dev VM: an idle single node spent ~3% of a core ticking).
        """
        return SOLE_LEADER_TICKS if self.raw.role is Role.LEADER and self._alone() else 1

    def _schedule_tick(self) -> None:
        assert self._loop is not None
        due = self._tick_origin + (self._ticks + self._tick_step()) * TICK_SECONDS
        self._tick_handle = self._loop.call_at(self._loop.time() + max(0.0, due - time.monotonic()), self._on_tick)

    def _on_tick(self) -> None:
        """Advance the engine's clock by the ticks that elapsed since the last call (bounded)."""
        if self._stopping:
            return
        now = time.monotonic()
        elapsed = int((now - self._tick_origin) / TICK_SECONDS) - self._ticks
        step = self._tick_step()
        if elapsed > step + 10:
            log.debug("node %d: event loop stalled for %d ms", self.node_id, elapsed * TICK_SECONDS * 1000)
        catch_up = max(MAX_CATCHUP_TICKS, step)
        if elapsed > catch_up:
            # A stall (SIGSTOP, a long GC pause): do not pretend that time was spent
            # listening; re-base the clock and replay only a few ticks.
            self._ticks += elapsed - catch_up
            elapsed = catch_up
        # A node that a member refuses (its data dir replaced that member's, docs/architecture.md)
        # lost the term and vote it had: its clock stands still, so it never campaigns, until no
        # member refuses it any more.
        if self.peers is None or not self.peers.refused_by:
            for _ in range(max(elapsed, 0)):
                self.raw.tick()
        before = self._ticks
        self._ticks += max(elapsed, 0)
        if self._ticks // 10 != before // 10:      # every 10 ticks (100 ms)
            self.proposals.expire(now)
            self.membership.poll()
            self.reads.expire(now)
            self.sessions.poll()
            if self.retention is not None:
                self.retention.tick()
        self._schedule_tick()
        if not self._kick_scheduled:
            self._pump_safely(commit=True)     # at once: a kick would cost another turn of the loop

    # -- the Ready loop ---------------------------------------------------------------------
    def kick(self) -> None:
        """Ask for a Ready pass at the end of this event-loop turn (coalesces many inputs into one)."""
        if not self._kick_scheduled and self._loop is not None:
            self._kick_scheduled = True
            self._loop.call_soon(self._pump_safely)

    def _pump_safely(self, commit: bool = False) -> None:
        """_pump, except that a stored entry failing its CRC stops the node (naming the index) instead of
        wedging the loop: a leader must not replicate, and nobody serve, an entry it cannot trust."""
        try:
            self._pump(commit)
        except CorruptLogError as exc:
            self._kick_scheduled = False
            self._stop_on_corrupt(exc)

    def _stop_on_corrupt(self, exc: CorruptLogError) -> None:
        """A stored entry failed its CRC on the way to a peer: log the index once and stop the node."""
        if self._failure is not None:
            return
        self.corrupt_index = exc.index
        log.error("node %d: %s; stopping rather than replicate it (run `raftlog repair %s --peers ...`)",
                  self.node_id, exc, self.cfg.data_dir)
        self._failure = exc
        self.request_stop()

    def _pump(self, commit: bool = False) -> None:
        """One Ready pass: take Readies and act on them until none is left or a write is in flight.

        A Ready whose write ended inline (or that needed none) is finished at once; the
        entries its write let commit are applied at once (take_committed) and the next Ready
        is taken in the same pass rather than in another turn of the event loop (after
        READY_PASSES the loop gets a turn first). A Ready that would only move the commit
        index is left for the next write to carry, except when `commit` (the tick's pass,
        and shutdown's): then it is taken and its hard state deferred (Writer.defer).
        """
        self._kick_scheduled = False
        if self._stopping:
            return
        raw = self.raw
        writer = self.writer
        assert writer is not None
        proposals = self.proposals
        for _ in range(READY_PASSES):
            proposals.flush()
            if writer.busy:
                # A write is running. What needs no durability goes now instead of after it:
                # AppendEntries for proposals that came in meanwhile (the followers write batch
                # k+1 while we fsync batch k), and replies for entries that became committed.
                self._send(raw.take_messages())
                committed = raw.take_committed()
                if committed:
                    self._apply(committed)
                return
            if not raw.has_ready(commit) or not self._handle_ready(raw.ready()):
                return
            committed = raw.take_committed()
            if committed:
                self._apply(committed)
        self.kick()

    def _handle_ready(self, rd: Any) -> bool:
        """Act on Ready `rd`; True when it is finished (advanced) already, False while its write runs."""
        if rd.conf_state is not None:
            self.membership.learn(rd.conf_state)
        if rd.read_states:
            self.reads.on_read_states(rd.read_states)
        self._refill()
        self._notice()
        if rd.messages:
            self._send(rd.messages)
        if rd.committed:
            # Committed entries are durable here already: answer their clients now, not
            # after this Ready's own write (which would add a whole fsync to every reply).
            self._apply(rd.committed)
        entries = rd.entries
        hs = rd.hard_state
        log_write = bool(rd.truncate_from or (entries is not None and len(entries))
                         or rd.snapshot_chunks or rd.snapshot is not None)
        if hs is not None and not log_write and not rd.must_sync:
            # Only the commit index moved. Raft needs no durable commit index (it is
            # re-learned from the leader), so this hard state rides along with the next write
            # or is written alone once COMMIT_FLUSH_SECONDS pass without one: a follower then
            # spends no fsync per commit advance, which would delay the next AppendEntries.
            self.writer.defer(hs)       # type: ignore[union-attr]
        elif hs is not None or log_write:
            return self.writer.write(rd, hs, inline=self._inline(rd))     # type: ignore[union-attr]
        self._finish(rd)
        return True

    def _inline(self, rd: Any) -> bool:
        """True for a write that runs on the loop thread: it has nothing to overlap with its fsync (Writer.write).

        A follower's small write (at most INLINE_WRITE_ENTRIES entries, no snapshot): its
        acknowledgement waits for it, and AppendEntries arriving meanwhile wait in the socket
        and join the next write. A sole member's writes, whatever their size: nothing but
        more appends could overlap with its fsync, and those join the next write anyway.
        The price is that the event loop (the embedding program's) waits for each fsync, as
        with sqlite3 called from a coroutine. Measured on the 2-core dev VM, fsync on,
        alternating runs, writer thread against inline: one append at a time p50 0.83-0.98
        -> 0.71-0.77 ms and 503-576 -> 333-354 us CPU per append (the hand-offs and the GIL
        going back and forth); 256 concurrent appenders 43-48K -> 49-50K appends/s
        (sync=False: 71-88K -> 105-124K); append_many(1000) 211-235K -> 260-304K entries/s.
        A leader with other members writes
        on the writer thread, so that it takes their acknowledgements and new proposals
        during its fsync.
        """
        if rd.snapshot_chunks or rd.snapshot is not None:
            return False
        raw = self.raw
        if raw.role is Role.LEADER:
            return self._alone()
        return rd.entries is None or len(rd.entries) <= INLINE_WRITE_ENTRIES

    def _alone(self) -> bool:
        """True when this node is the configuration's only member (no other voter, no learner)."""
        conf = self.raw.conf_state
        if conf is not self._alone_conf:
            self._alone_conf = conf
            self._alone_now = confchange.members(conf) == {self.node_id}
        return self._alone_now

    def _fail(self, exc: BaseException) -> None:
        """A write failed (not for lack of space): nothing of it was acknowledged; stop (fail-stop)."""
        self._failure = exc
        self.request_stop()

    def _finish(self, rd: Any) -> None:
        if rd.snapshot is not None:
            # The installed snapshot replaces the state machine before anything after it applies.
            log.info("node %d installed snapshot %d (term %d, %d bytes)", self.node_id, rd.snapshot.index,
                     rd.snapshot.term, rd.snapshot.size)
            if self.app is not None and self.app.stateful:
                table = self._restore_app(rd.snapshot)
            else:
                table = self._snapshot_sessions(rd.snapshot)
            if table is not None:
                self.sessions.load(table)
            if self.retention is not None:
                self.retention.on_snapshot_installed(rd.snapshot.index)
            self.applied_index = max(self.applied_index, rd.snapshot.index)
            if self.stats is not None:
                self.stats.snapshot_installed(time.monotonic())
        if rd.persisted_messages:
            self._send(rd.persisted_messages)
        self.raw.advance(rd)
        self._notice()

    def _apply(self, committed: list) -> None:
        """Hand committed batches, in index order, to the application and every service (answers their requests)."""
        app = self.app
        membership, sessions, proposals, retention = self.membership, self.sessions, self.proposals, self.retention
        for first, batch in committed:
            n = len(batch)
            if n:
                if app is not None:
                    app.apply(first, batch)
                    self.snapshots.note_applied(batch.nbytes)
                if retention is not None:
                    retention.on_committed(first, batch)
                membership.on_committed(first, batch)
                sessions.on_committed(first, batch)
                proposals.on_committed(first, batch)
                self.applied_index = first + n - 1
        self._after_apply()
        if app is not None:
            self.snapshots.maybe_take()
        if retention is not None:
            retention.maybe_compact()

    def _after_apply(self) -> None:
        """Let every service move on after an apply or a fresh write budget: waiting proposals, admin
        requests, released reads, waiting session appends."""
        self.proposals.retry()
        self.membership.poll()
        self.reads.serve()
        self.sessions.poll()

    def _on_backlog(self, waiting: bool) -> None:
        """Proposals started or stopped waiting for the write budget: the client service stops or resumes reading."""
        self.service.on_backlog(waiting)

    def _capture(self) -> Any:
        """The snapshot's bytes: the session table, then the application's image (runtime/sessions.py)."""
        return wrap_snapshot(self.sessions.table, self.app.snapshot())

    def _capture_sessions(self) -> Any:
        """A log without a state machine: the snapshot's bytes are the session table alone (runtime/retention.py)."""
        return wrap_snapshot(self.sessions.table, b"")

    def _snapshot_sessions(self, meta: SnapshotMeta) -> Optional[bytes]:
        """The session table the current snapshot carries (None: no snapshot, or an image without one).

        Only for a log without a state machine, whose snapshots are the table alone (small).
        """
        if not meta.index:
            return None
        return unwrap_snapshot(io.BytesIO(self.storage.snapshot_data()))[1]

    def _restore_app(self, meta: SnapshotMeta) -> Optional[bytes]:
        """Restore the application from snapshot `meta` (index 0: nothing to restore); the session table it carried."""
        path = self.storage.snapshot_path() if meta.index else None
        if path is None:
            return None
        with open(path, "rb") as f:
            image, table = unwrap_snapshot(f)
            self.app.restore(meta, image)
        log.info("node %d restored its state machine from snapshot %d (%d bytes)", self.node_id, meta.index,
                 meta.size)
        return table

    def _send(self, messages: list) -> None:
        peers = self.peers
        assert peers is not None
        if self.stats is not None:
            self.stats.messages_out(messages)
        for msg in messages:
            peers.send(msg)

    def _notice(self) -> None:
        """After a Ready: log a role change, tell leader-change listeners, act on this node's removal."""
        self._show_role()
        raw = self.raw
        self.leadership.observe(raw.term, raw.leader_id)
        self.removal.check()

    def _show_role(self) -> None:
        """One INFO line per role change (stable wording: tests and `raftlog cluster` read it)."""
        raft = self.raw.raft
        now = (raft.role, raft.leader_id, raft.term)
        if now == self._shown:
            return
        if self.stats is not None and now[1] != self._shown[1]:
            self.stats.leader_changes += 1
        self._shown = now
        role, leader, term = str(now[0]), now[1], now[2]
        if role == "leader":
            log.info("node %d became leader for term %d", self.node_id, term)
        elif role == "candidate":
            log.info("node %d became candidate for term %d", self.node_id, term)
        elif role == "follower" and leader:
            log.info("node %d following node %d in term %d", self.node_id, leader, term)
        else:
            log.debug("node %d is %s in term %d (leader unknown)", self.node_id, role, term)

    # -- NodePort (runtime/port.py): what the services use -----------------------------------
    @property
    def leader_id(self) -> int:
        """The leader this node knows of (0 when none)."""
        return self.raw.leader_id if self.raw is not None else 0

    @property
    def stopping(self) -> bool:
        """True once the node began shutting down."""
        return self._stopping

    def address_of(self, node_id: int) -> str:
        """HOST:PORT of member `node_id` ("" when unknown)."""
        return self.cfg.peers.get(node_id, "")

    def add_peer(self, node_id: int, address: str) -> None:
        """Member `node_id` is at `address` (learned from a configuration): remember it and dial it."""
        self.cfg.peers[node_id] = address
        if self.peers is not None:
            self.peers.add_peer(node_id, address)

    def forget_incarnations_but(self, members: frozenset[int]) -> None:
        """A committed configuration names `members`: forget, durably, the data-dir incarnations of everyone else."""
        if self.peers is not None:
            self.peers.forget_all_but(set(members))

    def reply(self, conn: Connection, frame: bytes) -> None:
        """Send a reply frame to a client (runtime/replies.py: backpressure included)."""
        send_reply(conn, frame)

    def error(self, conn: Connection, request_id: int, code: int, message: str) -> None:
        """Answer a request with an error; not-leader names the leader and its address when known."""
        leader_id = self.leader_id if code == ERR_NOT_LEADER else 0
        send_reply(conn, encode_error(request_id, code, leader_id, self.address_of(leader_id) if leader_id else "",
                                      message))

    # -- queries ----------------------------------------------------------------------------

    def status(self) -> dict:
        """The node's status as JSON-ready data (the fields of `raftlog status --json` and more)."""
        raw = self.raw
        leader = raw.leader_id
        peers = self.peers
        return {
            "id": self.node_id,
            "address": self.cfg.address,
            "role": "removed" if self.removal.removed else str(raw.role),
            "removed": self.removal.removed,
            "term": raw.term,
            "last_index": raw.last_index,
            "commit": raw.commit_index,
            "applied": self.applied_index,
            "leader": leader or None,
            "leader_address": self.address_of(leader) or None,
            "cluster_id": self.cfg.cluster_id,
            "members": {str(p): self.address_of(p) for p in sorted(confchange.members(raw.conf_state))},
            "member_table": raw.members(),
            "configuration": confchange.describe(raw.conf_state),
            # the voter sets a quorum is counted in: both during a joint change (dissertation 4.3)
            "voters": sorted(raw.conf_state.voters),
            "voters_outgoing": sorted(raw.conf_state.voters_outgoing),
            "connected": sorted(p for p in self.cfg.peers if peers is not None and peers.connected(p)),
            "dropped_messages": {str(p): n for p, n in sorted(peers.dropped.items())} if peers is not None else {},
            # peer -> why it refuses this node (its data dir was replaced: remove and re-join it)
            "refused_by": {str(p): why for p, why in sorted(peers.refused_by.items())} if peers is not None else {},
            "pending_requests": len(self.proposals),
            "writes": self.writer.writes if self.writer is not None else 0,
            "storage_error": self.writer.storage_error if self.writer is not None else None,
            "corrupt_index": self.corrupt_index,
            "first_index": raw.first_index,
            "data_dir_bytes": dir_bytes(self.cfg.data_dir),
            "snapshot": {"index": self.storage.snapshot_meta().index, "size": self.storage.snapshot_meta().size,
                         "taken": self.snapshots.taken},
        }


async def run_node(cfg: NodeConfig, joiner: Optional[Callable[[NodePort], Joining]] = None) -> int:
    """Run one node until SIGTERM/SIGINT; the process's exit status. `joiner`: see Node."""
    node = Node(cfg, joiner=joiner)
    loop = asyncio.get_running_loop()
    asked = asyncio.Event()       # a signal while the node starts is taken once it has started
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, asked.set)
    await node.start()
    watcher = loop.create_task(asked.wait())
    watcher.add_done_callback(lambda task: task.cancelled() or node.request_stop())
    try:
        await node.wait_stopped()
    except Exception:
        return 1
    finally:
        watcher.cancel()
    return 0
