"""The node's write path: everything one Ready asks to persist, as one LMDB transaction, and what a failed write means.

- A Ready's write (InstallSnapshot chunks, an installed snapshot, truncation, entries, hard
  state, configuration) is one `storage.save`, i.e. one transaction, run on the single writer
  thread: LMDB write transactions are thread-bound, and py-lmdb releases the GIL during the
  commit, so the event loop keeps receiving, stepping and proposing while the fsync runs.
- A write with nothing to overlap with its fsync runs on the loop itself instead: a
  follower's small write, a sole member's write (see Writer.write and Node._inline).
- A Ready that only moves the commit index is no transaction of its own: Raft needs no
  durable commit index (it is re-learned from the leader), so that hard state rides with the
  next write, or is written alone once COMMIT_FLUSH_SECONDS pass without a write; a follower
  then spends no fsync per commit advance, which would delay the next AppendEntries behind
  it, and a single node's append costs exactly one transaction.
- Disk full: a write that fails for lack of space is retried every DISK_RETRY_SECONDS instead
  of stopping the node; nothing it carried is acknowledged meanwhile (`storage_error` says so
  in the status). Any other failure is fail-stop: the node stops and a restart recovers from
  what is durable.

One write is in flight at a time (`busy`); the node takes the next Ready only after it.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

import lmdb

from raftlog.runtime.stats import NodeStats

log = logging.getLogger("raftlog.node")

# An lmdb.Error counts as "no space" when the data dir's filesystem has less than
# DISK_LOW_BYTES free (LMDB reports ENOSPC on a full tmpfs as EIO).
DISK_RETRY_SECONDS = 0.5
DISK_LOW_BYTES = 16 << 20
# A follower writes up to this many entries on the loop thread (see Writer.write and Node._inline).
# 3 nodes, one-entry requests, 1,024 in flight (follower writes of ~350 entries), alternating
# runs: each follower's CPU per request 7.6/7.5/6.3 us at 64 (the thread hand-off) against
# 5.1-5.6/4.7/5.0-5.2 us at 1024. Larger writes (the ceiling: ~3,500 entries) keep the thread.
INLINE_WRITE_ENTRIES = 1024
COMMIT_FLUSH_SECONDS = 0.05   # a commit-only hard state is written alone after this long without writes


class Writer:
    """Runs a node's writes one at a time; `on_durable(rd)` when one is durable, `on_failure(exc)` when it is not."""

    def __init__(self, node_id: int, data_dir: str, storage: Any, loop: asyncio.AbstractEventLoop, *,
                 on_durable: Callable[[Any], None], on_failure: Callable[[BaseException], None],
                 kick: Callable[[], None], stopping: Callable[[], bool]) -> None:
        self.node_id = node_id
        self.data_dir = data_dir
        self.storage = storage
        self._loop = loop
        self._on_durable = on_durable
        self._on_failure = on_failure
        self._kick = kick
        self._stopping = stopping
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raftlog-writer-{node_id}")
        self._inflight: Optional[asyncio.Future] = None
        self._deferred_hs: Any = None                 # a commit-only hard state not yet written
        self._deferred_timer: Optional[asyncio.TimerHandle] = None
        self._last_write = 0.0                        # time.monotonic() when the last write began
        self._retry_handle: Optional[asyncio.TimerHandle] = None
        self._placeholder: Optional[asyncio.Future] = None   # stands in for a write waiting to be retried
        self._full_since = 0.0
        self.writes = 0                               # transactions committed (for tests and status)
        self.storage_error: Optional[str] = None      # set while writes fail for lack of space
        self.stats: Optional[NodeStats] = None        # set by a node that serves metrics

    @property
    def busy(self) -> bool:
        """True while a write (or a disk-full retry) is in flight."""
        return self._inflight is not None

    # -- writing a Ready ------------------------------------------------------------------------
    def write(self, rd: Any, hard_state: Any, inline: bool) -> bool:
        """Persist Ready `rd` with `hard_state` (or a deferred one) as one transaction; on_durable(rd) after it.

        True when `rd` is durable and on_durable(rd) already ran (an inline write that
        succeeded): the caller may take the next Ready at once. Otherwise on_durable runs
        later, and a kick follows it.

        `inline`: run on the loop thread, for writes with nothing to overlap with their fsync
        (see Node._inline): the two thread hand-offs cost 0.2-0.3 ms each on a busy machine.
        Measured with `raftlog bench --clients 1 --inflight 1 --batch 1`, alternating runs,
        a follower's small writes: p50 3.37/3.70/3.37 ms through the thread, 2.81/3.26/2.47 ms
        inline; the throughput ceiling (large writes) still goes through the thread.
        """
        if hard_state is None:
            hard_state = self._deferred_hs
        self._deferred_hs = None
        self._last_write = time.monotonic()
        return self._run(rd, lambda: self._persist(rd, hard_state), inline, synchronous=True)

    def _persist(self, rd: Any, hard_state: Any) -> None:
        """The Ready's whole write in one transaction (durable on return when sync)."""
        entries = rd.entries if rd.entries is not None and len(rd.entries) else None
        storage = self.storage
        stats = self.stats
        started = time.perf_counter() if stats is not None else 0.0
        for meta, offset, data in rd.snapshot_chunks:      # InstallSnapshot: chunks first, durably
            storage.write_snapshot_chunk(meta, offset, data)
        if rd.snapshot is not None:                        # then replace the log by the snapshot
            storage.install_snapshot(rd.snapshot)
        storage.save(hard_state=hard_state, truncate_from=rd.truncate_from,
                     first_index=rd.entries_index if entries is not None else 0, records=entries,
                     conf_state=rd.conf_state)
        if stats is not None:
            stats.transaction_seconds.observe(time.perf_counter() - started)
            stats.transaction_entries.observe(len(entries) if entries is not None else 0)

    # -- commit-only hard states ----------------------------------------------------------------
    def defer(self, hard_state: Any) -> None:
        """Keep a commit-only hard state for the next write; write it alone once COMMIT_FLUSH_SECONDS
        pass without one."""
        self._deferred_hs = hard_state
        if self._deferred_timer is None:
            self._deferred_timer = self._loop.call_later(COMMIT_FLUSH_SECONDS, self._flush_deferred)

    def _flush_deferred(self) -> None:
        """Write the deferred hard state, unless a write ran lately or runs now (the next one carries it)."""
        self._deferred_timer = None
        if self._deferred_hs is None or self._stopping():
            return
        quiet = time.monotonic() - self._last_write
        if self._inflight is not None or quiet < COMMIT_FLUSH_SECONDS:
            # Writes keep coming: each carries the hard state deferred before it, so a
            # transaction of its own would only cost an fsync. Look again once they stop.
            self._deferred_timer = self._loop.call_later(max(0.0, COMMIT_FLUSH_SECONDS - quiet), self._flush_deferred)
            return
        hs, self._deferred_hs = self._deferred_hs, None
        self._last_write = time.monotonic()
        self._run(None, lambda: self.storage.save(hard_state=hs), inline=False)

    # -- running a write and taking its outcome --------------------------------------------------
    def _run(self, rd: Any, write: Callable[[], None], inline: bool, synchronous: bool = False) -> bool:
        """Run `write` as the in-flight transaction (inline or on the writer thread); `_done` takes its outcome.

        `synchronous`: the caller takes the next Ready itself when this returns True (no kick).
        """
        if inline:
            try:
                write()
            except Exception as exc:    # handled by _done exactly like a failed threaded write
                return self._done(rd, exc, write, inline, synchronous)
            return self._done(rd, None, write, inline, synchronous)
        fut = self._loop.run_in_executor(self._thread, write)
        self._inflight = fut
        fut.add_done_callback(lambda f: self._threaded_done(rd, f, write))
        return False

    def _threaded_done(self, rd: Any, fut: asyncio.Future, write: Callable[[], None]) -> None:
        """A write on the writer thread ended: take its outcome (unless the node gave up waiting for it)."""
        self._inflight = None
        if not fut.cancelled():
            self._done(rd, fut.exception(), write, False, False)

    def _out_of_space(self, exc: BaseException) -> bool:
        """True when a failed write failed for lack of space (see DISK_LOW_BYTES)."""
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if not isinstance(exc, lmdb.Error) or isinstance(exc, lmdb.MapFullError):
            return False
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < DISK_LOW_BYTES

    def _disk_full(self, rd: Any, write: Callable[[], None], inline: bool, exc: BaseException) -> None:
        """Hold the failed write and retry it later; the loop keeps sending what needs no durability."""
        if self.storage_error is None:
            self._full_since = time.monotonic()
            log.error("node %d: disk full: cannot write to %s (%s); acknowledging nothing until a write "
                      "succeeds, retrying every %.1fs", self.node_id, self.data_dir, exc, DISK_RETRY_SECONDS)
        self.storage_error = f"disk full: {exc}"
        placeholder = self._loop.create_future()
        self._placeholder = self._inflight = placeholder

        def retry() -> None:
            self._retry_handle = None
            if not placeholder.done():
                placeholder.set_result(None)
            if not self._stopping():
                self._run(rd, write, inline)
        self._retry_handle = self._loop.call_later(DISK_RETRY_SECONDS, retry)

    def _done(self, rd: Any, exc: Optional[BaseException], write: Callable[[], None], inline: bool,
              synchronous: bool) -> bool:
        """Take a write's outcome; True when `rd` is durable and finished here and the caller goes on (synchronous)."""
        self._inflight = None
        if exc is not None and self.stats is not None:
            self.stats.storage_errors += 1
        if exc is not None and not self._stopping() and self._out_of_space(exc):
            self._disk_full(rd, write, inline, exc)   # the transaction was aborted whole: the same write can be redone
            return False
        if exc is None and self.storage_error is not None:
            log.warning("node %d: storage writable again after %.1fs of disk full; resuming", self.node_id,
                        time.monotonic() - self._full_since)
            self.storage_error = None
        if exc is not None:
            # Nothing of this Ready was acknowledged; continuing would build on a write we
            # cannot trust, so the node stops (fail-stop) and a restart recovers from disk.
            log.error("node %d: storage write failed, stopping: %r", self.node_id, exc)
            self._on_failure(exc)
            return False
        self.writes += 1
        if self.stats is not None:      # (one write at a time: the storage's last commit is this write's)
            self.stats.commit_seconds.observe(self.storage.commit_seconds)
        if self._stopping():
            return False
        if rd is not None:       # (None: a deferred hard state was written: nothing to acknowledge)
            self._on_durable(rd)
            if synchronous:
                return True
        self._kick()
        return False

    # -- shutdown -------------------------------------------------------------------------------
    async def close(self, save_deferred: bool) -> None:
        """Give up a disk-full retry, let the in-flight commit end, write the deferred hard state, stop the thread."""
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
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
        if self._deferred_hs is not None and save_deferred:
            hs, self._deferred_hs = self._deferred_hs, None
            try:
                await self._loop.run_in_executor(self._thread, lambda: self.storage.save(hard_state=hs))
            except Exception as exc:
                log.warning("node %d: could not save the last commit index: %r", self.node_id, exc)
        self._thread.shutdown(wait=True)
