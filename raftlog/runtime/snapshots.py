"""Automatic snapshots and compaction for a node that runs an application state machine.

(A node without one snapshots only for retention, runtime/retention.py, through take_now.)

The node hands committed entries to an `Application` (raftlog.embed adapts the user's
state machine to it). Every `every_entries` applied entries, or `every_bytes` applied
bytes, the Snapshotter:

1. asks the application for its state at the applied index (`snapshot()`, on the event
   loop, between two applies, so the state is exactly that index's; it may return bytes,
   a binary file-like object or an iterable of bytes, which are consumed off the loop);
2. writes it as the storage's current snapshot on a dedicated thread (temp file, fsync,
   rename, directory fsync, then one transaction: LmdbStorage.save_snapshot), so the Ready
   pipeline's writer thread never waits behind a large file;
3. compacts the engine's in-memory log (RawNode.compact) and then the storage's log
   (LmdbStorage.compact_log, in bounded transactions) up to the snapshot index minus a
   retained tail of `tail_entries`, so a follower a little behind still gets entries,
   not a whole snapshot.

One snapshot is in progress at a time; a failure is logged and the next one retried later.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, Callable, Optional, Protocol

from raftlog.core.messages import SnapshotMeta
from raftlog.hot import RecordBatch
from raftlog.runtime.port import NodePort
from raftlog.runtime.stats import SECONDS_BUCKETS, Histogram

log = logging.getLogger("raftlog.snapshots")

DEFAULT_EVERY_ENTRIES = 100_000
DEFAULT_EVERY_BYTES = 64 << 20
DEFAULT_TAIL_ENTRIES = 10_000


class Application(Protocol):
    """What a node drives when it runs a state machine (raftlog.embed implements it)."""

    stateful: bool      # True: its state lives in snapshots (restored at start); False: it only watches the log

    def apply(self, first: int, batch: RecordBatch) -> None:
        """Apply committed entries `[first, first + len(batch))` in order (every kind; skip internal ones)."""

    def snapshot(self) -> Any:
        """The state after the last applied entry: bytes, a binary file-like object or an iterable of bytes."""

    def restore(self, meta: SnapshotMeta, image: Optional[BinaryIO]) -> None:
        """Replace the state by snapshot `meta`'s application image (None: no snapshot, start empty)."""


class Snapshotter:
    """Takes snapshots of a node's application and compacts its log; see the module docstring."""

    def __init__(self, port: NodePort, capture: Optional[Callable[[], Any]], *,
                 every_entries: int = DEFAULT_EVERY_ENTRIES, every_bytes: int = DEFAULT_EVERY_BYTES,
                 tail_entries: int = DEFAULT_TAIL_ENTRIES) -> None:
        """`capture()` returns the snapshot's bytes at the applied index (None: the node runs no application)."""
        self.port = port
        self.capture = capture
        self.every_entries = every_entries
        self.every_bytes = every_bytes
        self.tail_entries = tail_entries
        self.busy = False
        self.bytes_since = 0           # applied bytes since the last snapshot
        self.taken = 0                 # snapshots completed (status, tests)
        self.last: Optional[dict] = None   # {index, size, seconds, compacted_to} of the last one
        self.seconds = Histogram(SECONDS_BUCKETS)    # each snapshot's duration: capture, write, compaction
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raftlog-snap-{port.node_id}")

    @property
    def enabled(self) -> bool:
        """True when snapshots are taken automatically."""
        return self.capture is not None and (self.every_entries > 0 or self.every_bytes > 0)

    def note_applied(self, nbytes: int) -> None:
        """Count applied bytes toward the byte trigger."""
        self.bytes_since += nbytes

    def maybe_take(self) -> None:
        """Start a snapshot if one is due and none is running (called after entries were applied)."""
        node = self.port
        if self.busy or not self.enabled or node.raw is None:
            return
        applied = node.applied_index
        since = applied - node.storage.snapshot_meta().index
        due = (self.every_entries > 0 and since >= self.every_entries) or \
              (self.every_bytes > 0 and self.bytes_since >= self.every_bytes and since > 0)
        if not due or applied < node.raw.first_index - 1:
            return      # (the second: a received snapshot is about to replace the state)
        self.take_now()

    def take_now(self, compact_to: Optional[int] = None) -> Optional[asyncio.Future]:
        """Snapshot the application at its applied index now (unless one is running); the future ends with it.

        The log is then compacted up to `compact_to` (at most the snapshot's index; retention,
        runtime/retention.py), or by default up to the snapshot minus `tail_entries`.
        """
        node = self.port
        if self.busy or self.capture is None or node.raw is None:
            return None
        applied = node.applied_index
        if applied <= node.storage.snapshot_meta().index or applied < node.raw.first_index - 1:
            return None
        self.busy = True
        self.bytes_since = 0
        started = time.monotonic()
        meta = SnapshotMeta(applied, node.raw.raft.log.term_at(applied), node.raw.conf_state)
        data = self.capture()
        capture = time.monotonic() - started      # the only part on the event loop
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        async def run() -> None:
            try:
                saved = await loop.run_in_executor(self._thread, node.storage.save_snapshot, meta, data)
                raw = node.raw
                upto = min(saved.index - self.tail_entries if compact_to is None else min(compact_to, saved.index),
                           raw.applied_index)
                compacted = raw.first_index - 1
                if upto > compacted and not node.stopping:
                    raw.compact(upto)          # the engine first: it must never read what storage drops
                    await loop.run_in_executor(self._thread, node.storage.compact_log, upto)
                    compacted = upto
                self.taken += 1
                seconds = time.monotonic() - started
                self.seconds.observe(seconds)
                self.last = {"index": saved.index, "size": saved.size, "seconds": round(seconds, 3),
                             "capture_seconds": round(capture, 3), "compacted_to": compacted}
                log.info("node %d snapshot at %d (term %d, %d bytes, %.3f s, %.3f s of it on the loop), "
                         "log compacted to %d", node.node_id, saved.index, saved.term, saved.size, seconds,
                         capture, compacted)
            except Exception as exc:
                log.warning("node %d: snapshot at %d failed: %r", node.node_id, meta.index, exc)
            finally:
                self.busy = False
                if not done.done():
                    done.set_result(self.last)
            if not node.stopping:
                self.maybe_take()      # more may have been applied meanwhile

        loop.create_task(run())
        return done

    def close(self) -> None:
        """Wait for a snapshot write in progress, then stop the thread."""
        self._thread.shutdown(wait=True)
