"""The node loop: RawNode driven by a real clock, LmdbStorage and the transport.

One Ready at a time, in the order the engine's contract demands:

1. `ready.messages` go out at once (a leader's AppendEntries overlap its own write);
2. everything the Ready asks to persist (truncation, entries, hard state) is one
   `storage.save` call, i.e. one LMDB write transaction, run on the single writer thread
   (LMDB write transactions are thread-bound; py-lmdb releases the GIL during the commit,
   so the event loop keeps receiving, stepping and proposing while the fsync runs), except
   a follower's small write, which runs on the loop itself (see Node._write);
3. when the write is durable, `ready.persisted_messages` go out (votes and acknowledgements
   only ever describe durable state, DESIGN.md section 3), committed batches are applied
   (pending client requests answered), and `advance` is called.

Proposals and messages that arrive while a write is in flight go into the engine at once;
the next Ready carries all of them, so they share the next transaction (group commit). Two
refinements, each explained where it is made: a transaction takes at most
WRITE_BATCH_ENTRIES / WRITE_BATCH_BYTES (the rest waits for the next one), and a Ready that
only moves the commit index is not a transaction of its own (COMMIT_FLUSH_SECONDS).
Measured on the 2-core dev box, 3 local processes, fsync on: ~400K entries/s durable with
append_many of 100-byte payloads, 1.7 ms for one append (leader write + follower write + RTT).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import signal
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

from raftlog.core import confchange
from raftlog.core.config import Config
from raftlog.core.messages import Message
from raftlog.core.rawnode import RawNode, Role
from raftlog.errors import CorruptLogError
from raftlog.runtime.listener import Listener
from raftlog.runtime.membership import DEFAULT_PROMOTE_LAG, Joiner, Membership
from raftlog.runtime.peer_transport import PeerTransport
from raftlog.runtime.peers import parse_address
from raftlog.runtime.reads import Reads
from raftlog.runtime.sessions import SessionService
from raftlog.runtime.server import ClientService
from raftlog.runtime.snapshots import Snapshotter

log = logging.getLogger("raftlog.node")

TICK_SECONDS = 0.010          # one engine tick (DESIGN.md section 3)
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
# Disk full (issue 8): a write that fails for lack of space is retried every DISK_RETRY_SECONDS
# instead of stopping the node; nothing it carried is acknowledged meanwhile. An lmdb.Error
# counts as "no space" when the data dir's filesystem has less than DISK_LOW_BYTES free
# (LMDB reports ENOSPC on a full tmpfs as EIO; any other failure still stops the node).
DISK_RETRY_SECONDS = 0.5
DISK_LOW_BYTES = 16 << 20
INLINE_WRITE_ENTRIES = 64     # a follower writes up to this many entries on the loop thread (see Node._write)
COMMIT_FLUSH_SECONDS = 0.05   # a commit-only hard state waits at most this long for a write to join


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
    # Issue 8: mutual TLS on every connection (runtime/tls.py) and/or a shared secret proved
    # by HMAC challenge-response in the handshake (runtime/auth.py).
    tls: Any = None                   # a raftlog.runtime.tls.TlsFiles, or None
    secret: Optional[bytes] = None

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
    """One running member: its engine, its storage, its port. `await start()`, then `await stop()`."""

    def __init__(self, cfg: NodeConfig, *, storage: Any = None, rng: Optional[random.Random] = None,
                 app: Any = None) -> None:
        self.cfg = cfg
        self.app = app                        # an Application (runtime/snapshots.py), or None: the log is the product
        self.snapshots = Snapshotter(self, every_entries=cfg.snapshot_every, every_bytes=cfg.snapshot_bytes,
                                     tail_entries=cfg.snapshot_tail)
        self.node_id = cfg.node_id
        self._storage_arg = storage
        self._rng = rng or random.Random(int.from_bytes(os.urandom(8), "big"))
        self.storage: Any = None
        self.raw: Any = None
        self.peers: Optional[PeerTransport] = None
        self.listener: Optional[Listener] = None
        self.service = ClientService(self, request_timeout=cfg.request_timeout)
        self.membership = Membership(self)
        self.reads = Reads(self, cfg.request_timeout)
        self.sessions = SessionService(self)
        self.joiner: Optional[Joiner] = None
        self.applied_index = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raftlog-writer-{cfg.node_id}")
        self._inflight: Optional[asyncio.Future] = None
        self._kick_scheduled = False
        self._tick_handle: Optional[asyncio.TimerHandle] = None
        self._tick_origin = 0.0
        self._ticks = 0
        self._stopping = False
        self._stopped: Optional[asyncio.Event] = None
        self._failure: Optional[BaseException] = None
        self._shown: tuple = ("follower", 0, 0)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.writes = 0                       # transactions committed (for tests and status)
        self.storage_error: Optional[str] = None   # set while writes fail for lack of space
        self.corrupt_index: Optional[int] = None   # a stored entry that failed its CRC when read
        self._full_since = 0.0
        self._retry_handle: Optional[asyncio.TimerHandle] = None
        self._placeholder: Optional[asyncio.Future] = None   # stands in for the write while it waits to retry
        self.unwritten_entries = 0            # entries fed to the engine since the last ready()
        self.unwritten_bytes = 0
        self._deferred: deque[Message] = deque()   # AppendEntries held back by the write budget
        self._lazy_hs: Any = None             # a commit-only hard state not yet written (see _pump)
        self._lazy_timer: Optional[asyncio.TimerHandle] = None

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
            if self.app is not None and getattr(self.app, "stateful", True):
                # An application's state is not durable by itself: restore its snapshot and
                # let the engine hand out the log tail after it again.
                meta = self.storage.snapshot_meta()
                self.app.restore(meta, self.storage.snapshot_path() if meta.index else None)
                applied = meta.index
            self.raw = RawNode(self.cfg.engine_config(applied), self.storage, self._rng)
            self.applied_index = self.raw.applied_index
            self.sessions.rebuild()
            self._shown = (str(self.raw.role), self.raw.leader_id, self.raw.term)
            # The log's configuration (replicated with every change), not --peers, names the
            # members and their addresses; a difference is one WARNING line (runtime/peer_check.py).
            from raftlog.runtime.peer_check import use_log_peers
            self.cfg.peers = use_log_peers(self.node_id, self.cfg.peers, self.raw.conf_state, warn=not self.cfg.join)
            self.peers = PeerTransport(self.node_id, self.cfg.cluster_id, self.cfg.peers, self._on_message,
                                       self._on_peer, rng=self._rng, tls=self.cfg.tls, secret=self.cfg.secret)
            self.listener = Listener(self.node_id, self.cfg.cluster_id, self.peers, self.service.handler_for,
                                     tls=self.cfg.tls, secret=self.cfg.secret)
            if self.cfg.listen:
                host, port = parse_address(self.cfg.address)
                await self.listener.start(host, port)
        except BaseException:
            self.storage.close()
            self._writer.shutdown(wait=True)
            raise
        if self.cfg.join:
            self.peers.accept_unknown = True    # we learn the members from the log
        self.peers.start()
        if self.cfg.join:
            self.joiner = Joiner(self, self.cfg.join, promote=self.cfg.promote, max_lag=self.cfg.promote_lag)
            self.joiner.start()
        self._tick_origin = time.monotonic()
        self._schedule_tick()
        log.info("node %d listening on %s (cluster %s, term %d, last index %d, commit %d)", self.node_id,
                 self.cfg.address, self.cfg.cluster_id, self.raw.term, self.raw.last_index, self.raw.commit_index)
        self.kick()

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
        self._stopping = True
        log.info("node %d shutting down", self.node_id)
        if self.joiner is not None:
            await self.joiner.stop()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self.service.shutdown()
        if self.listener is not None:
            await self.listener.close()
        if self.peers is not None:
            await self.peers.close()
        if self._retry_handle is not None:           # disk full: give up the retry, nothing was written
            self._retry_handle.cancel()
            self._retry_handle = None
        if self._placeholder is not None and not self._placeholder.done():
            self._placeholder.set_result(None)
        if self._inflight is not None:
            try:
                await asyncio.shield(self._inflight)   # a commit cannot be interrupted halfway: let it end
            except Exception:
                pass
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
        if self._lazy_hs is not None and self._failure is None:
            hs, self._lazy_hs = self._lazy_hs, None
            try:
                await asyncio.get_running_loop().run_in_executor(self._writer, lambda: self.storage.save(hard_state=hs))
            except Exception as exc:
                log.warning("node %d: could not save the last commit index: %r", self.node_id, exc)
        self._writer.shutdown(wait=True)
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
        self.service.after_apply()

    def _on_peer(self, peer_id: int, up: bool) -> None:
        """The transport's connection to `peer_id` came up or went down."""
        if not up and self.raw is not None:
            self.raw.report_unreachable(peer_id)
            self.kick()

    def _schedule_tick(self) -> None:
        assert self._loop is not None
        due = self._tick_origin + (self._ticks + 1) * TICK_SECONDS
        self._tick_handle = self._loop.call_at(self._loop.time() + max(0.0, due - time.monotonic()), self._on_tick)

    def _on_tick(self) -> None:
        """Advance the engine's clock by the ticks that elapsed since the last call (bounded)."""
        if self._stopping:
            return
        now = time.monotonic()
        elapsed = int((now - self._tick_origin) / TICK_SECONDS) - self._ticks
        if elapsed > 10:
            log.debug("node %d: event loop stalled for %d ms", self.node_id, elapsed * TICK_SECONDS * 1000)
        if elapsed > MAX_CATCHUP_TICKS:
            # A stall (SIGSTOP, a long GC pause): do not pretend that time was spent
            # listening; re-base the clock and replay only a few ticks.
            self._ticks += elapsed - MAX_CATCHUP_TICKS
            elapsed = MAX_CATCHUP_TICKS
        for _ in range(max(elapsed, 0)):
            self.raw.tick()
        self._ticks += max(elapsed, 0)
        if self._ticks % 10 == 0:
            self.service.expire(now)
            self.membership.poll()
            self.reads.expire(now)
            self.sessions.poll()
        self._schedule_tick()
        self.kick()

    # -- the Ready loop ---------------------------------------------------------------------
    def kick(self) -> None:
        """Ask for a Ready pass at the end of this event-loop turn (coalesces many inputs into one)."""
        if not self._kick_scheduled and self._loop is not None:
            self._kick_scheduled = True
            self._loop.call_soon(self._pump_safely)

    def _pump_safely(self) -> None:
        """_pump, except that a stored entry failing its CRC stops the node (naming the index) instead of
        wedging the loop: a leader must not replicate, and nobody serve, an entry it cannot trust."""
        try:
            self._pump()
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

    def _pump(self) -> None:
        self._kick_scheduled = False
        if self._stopping:
            return
        self.service.flush_staged()
        raw = self.raw
        if self._inflight is not None:
            # A write is running. What needs no durability goes now instead of after it:
            # AppendEntries for proposals that came in meanwhile (the followers write batch
            # k+1 while we fsync batch k), and replies for entries that became committed.
            self._send(raw.take_messages())
            committed = raw.take_committed()
            if committed:
                self._apply(committed)
            return
        if not raw.has_ready():
            return
        rd = raw.ready()
        if rd.conf_state is not None:
            self.membership.learn(rd.conf_state)
        if rd.read_states:
            self.reads.on_read_states(rd.read_states)
        self._refill()
        self._show_role()
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
            # or is flushed after COMMIT_FLUSH_SECONDS: a follower then spends no fsync per
            # commit advance, which would delay the next AppendEntries behind it.
            self._lazy_hs = hs
            self._schedule_lazy_flush()
            self._finish(rd)
            return
        if hs is not None or log_write:
            assert self._loop is not None
            write_hs = hs if hs is not None else self._lazy_hs
            self._lazy_hs = None
            self._write(rd, lambda: self._persist(rd, write_hs))
        else:
            self._finish(rd)

    def _persist(self, rd: Any, hard_state: Any) -> None:
        """Writer thread: the Ready's whole write in one transaction (durable on return when sync)."""
        entries = rd.entries if rd.entries is not None and len(rd.entries) else None
        storage = self.storage
        for meta, offset, data in rd.snapshot_chunks:      # InstallSnapshot: chunks first, durably
            storage.write_snapshot_chunk(meta, offset, data)
        if rd.snapshot is not None:                        # then replace the log by the snapshot
            storage.install_snapshot(rd.snapshot)
        self.storage.save(hard_state=hard_state, truncate_from=rd.truncate_from,
                          first_index=rd.entries_index if entries is not None else 0, records=entries,
                          conf_state=rd.conf_state)

    def _schedule_lazy_flush(self) -> None:
        if self._lazy_timer is None and self._loop is not None:
            self._lazy_timer = self._loop.call_later(COMMIT_FLUSH_SECONDS, self._flush_lazy_hs)

    def _flush_lazy_hs(self) -> None:
        """Write a deferred commit-only hard state, unless a write is running (then try again later)."""
        self._lazy_timer = None
        if self._lazy_hs is None or self._stopping:
            return
        if self._inflight is not None:
            self._schedule_lazy_flush()
            return
        hs, self._lazy_hs = self._lazy_hs, None
        assert self._loop is not None
        self._write(None, lambda: self.storage.save(hard_state=hs))

    def _write(self, rd: Any, write: Any) -> None:
        """Run `write` on the writer thread as the in-flight transaction; `_persisted` takes its outcome.

        A follower's small write (at most INLINE_WRITE_ENTRIES entries, no snapshot) runs
        right here on the loop instead: a follower has nothing to overlap with its fsync
        (its acknowledgement waits for it, and AppendEntries arriving meanwhile wait in the
        socket and join the next write), and the two thread hand-offs cost 0.2-0.3 ms each
        on a busy machine. Measured with `raftlog bench --clients 1 --inflight 1 --batch 1`,
        alternating runs: p50 3.37/3.70/3.37 ms through the thread, 2.81/3.26/2.47 ms inline;
        the throughput ceiling (large writes) still goes through the thread.
        """
        assert self._loop is not None
        if rd is not None and self._inline(rd):
            fut = self._loop.create_future()
            try:
                write()
                fut.set_result(None)
            except Exception as exc:    # handled by _persisted exactly like a failed threaded write
                fut.set_exception(exc)
            self._persisted(rd, fut, write)
            return
        fut = self._loop.run_in_executor(self._writer, write)
        self._inflight = fut
        fut.add_done_callback(lambda f: self._persisted(rd, f, write))

    def _inline(self, rd: Any) -> bool:
        """True for a write that runs on the loop thread (see _write)."""
        return (self.raw.role is not Role.LEADER and not rd.snapshot_chunks and rd.snapshot is None
                and (rd.entries is None or len(rd.entries) <= INLINE_WRITE_ENTRIES))

    def _out_of_space(self, exc: BaseException) -> bool:
        """True when a failed write failed for lack of space (see DISK_LOW_BYTES)."""
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        import lmdb
        if not isinstance(exc, lmdb.Error) or isinstance(exc, lmdb.MapFullError):
            return False
        try:
            st = os.statvfs(self.cfg.data_dir)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < DISK_LOW_BYTES

    def _disk_full(self, rd: Any, write: Any, exc: BaseException) -> None:
        """Hold the failed write and retry it later; the loop keeps sending what needs no durability."""
        assert self._loop is not None
        if self.storage_error is None:
            self._full_since = time.monotonic()
            log.error("node %d: disk full: cannot write to %s (%s); acknowledging nothing until a write "
                      "succeeds, retrying every %.1fs", self.node_id, self.cfg.data_dir, exc, DISK_RETRY_SECONDS)
        self.storage_error = f"disk full: {exc}"
        placeholder = self._loop.create_future()
        self._placeholder = self._inflight = placeholder

        def retry() -> None:
            self._retry_handle = None
            if not placeholder.done():
                placeholder.set_result(None)
            if not self._stopping:
                self._write(rd, write)
        self._retry_handle = self._loop.call_later(DISK_RETRY_SECONDS, retry)

    def _persisted(self, rd: Any, fut: asyncio.Future, write: Any = None) -> None:
        self._inflight = None
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None and write is not None and not self._stopping and self._out_of_space(exc):
            self._disk_full(rd, write, exc)   # the transaction was aborted whole: the same write can be redone
            return
        if exc is None and self.storage_error is not None:
            log.warning("node %d: storage writable again after %.1fs of disk full; resuming", self.node_id,
                        time.monotonic() - self._full_since)
            self.storage_error = None
        if exc is not None:
            # Nothing of this Ready was acknowledged; continuing would build on a write we
            # cannot trust, so the node stops (fail-stop) and a restart recovers from disk.
            log.error("node %d: storage write failed, stopping: %r", self.node_id, exc)
            self._failure = exc
            self.request_stop()
            return
        self.writes += 1
        if self._stopping:
            return
        if rd is None:       # a deferred hard state was written: nothing to acknowledge
            self.kick()
            return
        self._finish(rd)

    def _finish(self, rd: Any) -> None:
        if rd.snapshot is not None:
            # The installed snapshot replaces the state machine before anything after it applies.
            log.info("node %d installed snapshot %d (term %d, %d bytes)", self.node_id, rd.snapshot.index,
                     rd.snapshot.term, rd.snapshot.size)
            if self.app is not None:
                self.app.restore(rd.snapshot, self.storage.snapshot_path())
            self.applied_index = max(self.applied_index, rd.snapshot.index)
        self._send(rd.persisted_messages)
        self.raw.advance(rd)
        self._show_role()
        self.kick()

    def _apply(self, committed: list) -> None:
        """Hand committed batches to the client service (answers their requests), in index order."""
        service = self.service
        app = self.app
        for first, batch in committed:
            n = len(batch)
            if n:
                if app is not None:
                    app.apply(first, batch)
                    self.snapshots.note_applied(batch.nbytes)
                service.on_committed(first, batch)
                self.applied_index = first + n - 1
        service.after_apply()
        if app is not None:
            self.snapshots.maybe_take()

    def _send(self, messages: list) -> None:
        peers = self.peers
        assert peers is not None
        for msg in messages:
            peers.send(msg)

    def _show_role(self) -> None:
        """One INFO line per role change (stable wording: tests and `raftlog cluster` read it)."""
        raw = self.raw
        now = (str(raw.role), raw.leader_id, raw.term)
        if now == self._shown:
            return
        self._shown = now
        role, leader, term = now
        if role == "leader":
            log.info("node %d became leader for term %d", self.node_id, term)
        elif role == "candidate":
            log.info("node %d became candidate for term %d", self.node_id, term)
        elif role == "follower" and leader:
            log.info("node %d following node %d in term %d", self.node_id, leader, term)
        else:
            log.debug("node %d is %s in term %d (leader unknown)", self.node_id, role, term)

    # -- queries ----------------------------------------------------------------------------
    @property
    def leader_id(self) -> int:
        """The leader this node knows of (0 when none)."""
        return self.raw.leader_id if self.raw is not None else 0

    def address_of(self, node_id: int) -> str:
        """HOST:PORT of member `node_id` ("" when unknown)."""
        return self.cfg.peers.get(node_id, "")

    def status(self) -> dict:
        """The node's status as JSON-ready data (the fields of `raftlog status --json` and more)."""
        raw = self.raw
        leader = raw.leader_id
        peers = self.peers
        return {
            "id": self.node_id,
            "address": self.cfg.address,
            "role": str(raw.role),
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
            "connected": sorted(p for p in self.cfg.peers if peers is not None and peers.connected(p)),
            "dropped_messages": {str(p): n for p, n in sorted(peers.dropped.items())} if peers is not None else {},
            "pending_requests": len(self.service.pending),
            "writes": self.writes,
            "storage_error": self.storage_error,
            "corrupt_index": self.corrupt_index,
            "first_index": raw.first_index,
            "snapshot": {"index": self.storage.snapshot_meta().index, "size": self.storage.snapshot_meta().size,
                         "taken": self.snapshots.taken},
        }


async def run_node(cfg: NodeConfig) -> int:
    """Run one node until SIGTERM/SIGINT; the process's exit status."""
    node = Node(cfg)
    await node.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.request_stop)
    try:
        await node.wait_stopped()
    except Exception:
        return 1
    return 0
