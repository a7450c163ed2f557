"""The counts a node keeps for its metrics: plain integers and bucket counts, updated once per batch.

A node keeps a `NodeStats` only when it serves metrics (`NodeConfig.metrics`); otherwise every
hook is one `is None` test. Nothing here needs prometheus_client: runtime/metrics.py turns these
counts into Prometheus families when /metrics is scraped, together with gauges read from the
state the node keeps anyway (role, term, indexes, per-peer match). Hooks count per batch
(a transaction, an AppendEntries message, a committed batch of requests), never per entry.
"""
from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from typing import Any

from raftlog import _codec_constants
from raftlog.core.messages import MessageType

APPEND = MessageType.APPEND
SNAPSHOT = MessageType.SNAPSHOT
SNAPSHOT_RESP = MessageType.SNAPSHOT_RESP
APPEND_RESP = MessageType.APPEND_RESP

# Upper bounds, seconds: from a fast local fsync (~50 us) to a stalled disk (several seconds).
SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
# Upper bounds, entries in one transaction or one AppendEntries (the write budget is 8192 entries).
ENTRIES_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
# Upper bounds, bytes of the entries of one AppendEntries message.
BYTES_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1 << 20, 4 << 20, 16 << 20)


class Histogram:
    """Bucket counts and a sum, cheap to update (one bisect); read whole by the collector at scrape time.

    `counts[k]` counts observations in (bounds[k-1], bounds[k]]; the last slot those above every bound.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        """Count `times` observations of `value`."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (upper bound as text, observations at or below it), ending with +Inf."""
        out, total = [], 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out


class NodeStats:
    """What a node counts for its metrics; each attribute is updated by the one module named beside it."""

    def __init__(self, request_timeout: float) -> None:
        self.request_timeout = request_timeout
        # runtime/node.py
        self.leader_changes = 0                       # times the known leader changed (to another or to none)
        self.appends_sent = 0                         # AppendEntries messages with entries, sent
        self.appends_sent_entries = Histogram(ENTRIES_BUCKETS)
        self.appends_sent_bytes = Histogram(BYTES_BUCKETS)
        self.appends_received = 0                     # AppendEntries messages with entries, received
        self.appends_received_entries = Histogram(ENTRIES_BUCKETS)
        self.appends_received_bytes = Histogram(BYTES_BUCKETS)
        self.snapshot_chunks_sent = 0                 # InstallSnapshot messages sent
        self.snapshots_sent = 0                       # snapshot transfers started (chunks at offset 0 sent)
        self.snapshots_installed = 0                  # snapshots received from a leader and installed
        self.snapshot_receive_seconds = Histogram(SECONDS_BUCKETS)   # first chunk received to installed
        self._receiving_since = 0.0                   # when the first chunk of the incoming snapshot came
        self.snapshot_send_seconds = Histogram(SECONDS_BUCKETS)      # first chunk sent to the follower's install
        self._sending: dict[int, tuple[float, int, int]] = {}        # follower: (since, snapshot size, its index)
        # runtime/writer.py (on the writer thread, or inline on the loop: one write at a time)
        self.transaction_seconds = Histogram(SECONDS_BUCKETS)     # one Ready's whole write
        self.commit_seconds = Histogram(SECONDS_BUCKETS)          # every transaction's LMDB commit: pages, fsync
        self.transaction_entries = Histogram(ENTRIES_BUCKETS)
        self.storage_errors = 0                       # writes that failed (disk full: each failed attempt)
        # runtime/proposals.py
        self.requests_committed = 0                   # append requests answered appended
        self.entries_committed = 0                    # their entries
        self.requests_failed: Counter[str] = Counter()   # append requests answered with an error, by reason
        self.request_seconds = Histogram(SECONDS_BUCKETS)  # arrival to the appended answer
        # runtime/listener.py and runtime/connection.py
        self.refused: Counter[str] = Counter()        # connections and frames refused, by reason

    def messages_out(self, messages: list) -> None:
        """Count the AppendEntries with entries and the InstallSnapshot chunks among `messages` (sent)."""
        for msg in messages:
            kind = msg.type
            if kind == APPEND:
                entries = msg.entries
                if entries is not None and len(entries):
                    self.appends_sent += 1
                    self.appends_sent_entries.observe(len(entries))
                    self.appends_sent_bytes.observe(entries.nbytes)
            elif kind == SNAPSHOT:
                self.snapshot_chunks_sent += 1
                if msg.hint_index == 0:               # (hint_index: the chunk's byte offset, core/snapshot.py)
                    self.snapshots_sent += 1
                    self._sending[msg.to] = (time.monotonic(), msg.hint_term, msg.index)   # (hint_term: the size)

    def message_in(self, msg: Any, now: float) -> None:
        """Count `msg`, received at `now`: an AppendEntries with entries, a snapshot's first chunk, or the
        acknowledgement that ends a snapshot transfer to a follower (all of it held, or installed)."""
        entries = msg.entries
        if entries is not None and len(entries):
            self.appends_received += 1
            self.appends_received_entries.observe(len(entries))
            self.appends_received_bytes.observe(entries.nbytes)
        elif msg.type == SNAPSHOT and msg.hint_index == 0:
            self._receiving_since = now
        elif self._sending and msg.frm in self._sending and not msg.reject:
            since, size, index = self._sending[msg.frm]
            kind = msg.type
            if (kind == SNAPSHOT_RESP and msg.hint_index >= size) or (kind == APPEND_RESP and msg.index >= index):
                self.snapshot_send_seconds.observe(now - since)
                del self._sending[msg.frm]

    def snapshot_installed(self, now: float) -> None:
        """A snapshot received from the leader was installed at `now`."""
        self.snapshots_installed += 1
        if self._receiving_since:
            self.snapshot_receive_seconds.observe(now - self._receiving_since)
            self._receiving_since = 0.0

    def request_appended(self, deadline: float, entries: int, requests: int = 1) -> None:
        """`requests` append requests (a group proposed together) of `entries` entries in all, with this
        deadline (the group's first member's), were answered appended, now.

        Every append request's deadline is its arrival plus request_timeout (runtime/server.py,
        embed.py and runtime/sessions.py set it so), so no arrival time is kept per request.
        """
        self.requests_committed += requests
        self.entries_committed += entries
        self.request_seconds.observe(max(0.0, time.monotonic() + self.request_timeout - deadline), requests)

    def request_failed(self, code: int, requests: int = 1) -> None:
        """`requests` append requests were answered with error `code` (an ERR_* of raftlog.hot).

        A group whose last index another leader replaced is counted under that code as a whole,
        although members before that point may be answered appended (AppendGroup._settle_each).
        """
        self.requests_failed[error_name(code)] += requests


def error_name(code: int) -> str:
    """The label of error code `code`: ERR_NOT_LEADER -> "not_leader" (unknown codes: "code_N")."""
    return _ERROR_NAMES.get(code, f"code_{code}")


_ERROR_NAMES = {value: name[4:].lower() for name, value in vars(_codec_constants).items()
                if name.startswith("ERR_") and isinstance(value, int)}
