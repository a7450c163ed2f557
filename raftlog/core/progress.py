"""Per-follower replication state on the leader: match, next, probe/replicate, the inflight window."""
from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Optional

from raftlog.core.messages import SnapshotMeta


class ProgressState(str, Enum):
    """How the leader replicates to one follower (etcd's tracker states)."""

    PROBE = "probe"            # one AppendEntries at a time until the follower's log position is known
    REPLICATE = "replicate"    # optimistic pipelining, bounded by the inflight window
    SNAPSHOT = "snapshot"      # the follower needs compacted entries: InstallSnapshot chunks are in flight

    def __str__(self) -> str:
        return self.value


class Inflights:
    """AppendEntries sent but not yet acknowledged, bounded in messages and in bytes."""

    __slots__ = ("max_msgs", "max_bytes", "_q", "bytes")

    def __init__(self, max_msgs: int, max_bytes: int) -> None:
        self.max_msgs = max_msgs
        self.max_bytes = max_bytes
        self._q: deque[tuple[int, int]] = deque()   # (last index of the message, its bytes)
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._q)

    def add(self, last_index: int, nbytes: int) -> None:
        """Record a message whose entries end at last_index."""
        self._q.append((last_index, nbytes))
        self.bytes += nbytes

    def free_le(self, index: int) -> None:
        """Forget every message ending at or below `index` (acknowledged)."""
        q = self._q
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        """Forget the oldest message (its ack was probably lost); unblocks a full window."""
        if self._q:
            self.bytes -= self._q.popleft()[1]

    def full(self) -> bool:
        """True when no more messages may be sent."""
        return len(self._q) >= self.max_msgs or self.bytes >= self.max_bytes

    def reset(self) -> None:
        """Forget everything."""
        self._q.clear()
        self.bytes = 0


class SnapshotSend:
    """The leader's view of one snapshot transfer (core/snapshot.py): bytes sent, bytes acknowledged durable.

    Invariant: acked <= sent <= meta.size.
    """

    __slots__ = ("meta", "sent", "acked", "rewound", "heard", "empty_out")

    def __init__(self, meta: SnapshotMeta) -> None:
        self.meta = meta
        self.sent = 0
        self.acked = 0
        self.rewound = -1        # offset last rewound to, so a burst of gap reports rewinds once
        self.heard = False       # a chunk was acknowledged since the last heartbeat response
        self.empty_out = False   # an empty snapshot's single empty chunk is in flight

    def to_dict(self) -> dict:
        return {"index": self.meta.index, "size": self.meta.size, "sent": self.sent, "acked": self.acked}


class Progress:
    """What the leader knows about one peer's log.

    Invariant: match < next. `match` only moves forward within a term (a stale or duplicated
    response never lowers it).
    """

    __slots__ = ("match", "next", "state", "probe_sent", "recent_active", "inflights", "snap")

    def __init__(self, next_index: int, match: int, max_msgs: int, max_bytes: int) -> None:
        self.match = match
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.recent_active = False
        self.inflights = Inflights(max_msgs, max_bytes)
        self.snap: Optional[SnapshotSend] = None   # set while state is SNAPSHOT (core/snapshot.py)

    def become_probe(self) -> None:
        """Fall back to probing from match + 1 (after a rejection or on a new leader)."""
        self.state = ProgressState.PROBE
        self.snap = None
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.reset()

    def become_replicate(self) -> None:
        """Start pipelining from match + 1."""
        self.state = ProgressState.REPLICATE
        self.snap = None
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, send: SnapshotSend) -> None:
        """Stop AppendEntries: the follower needs entries we compacted; `send` tracks the transfer."""
        self.state = ProgressState.SNAPSHOT
        self.snap = send
        self.probe_sent = False
        self.inflights.reset()

    def is_paused(self) -> bool:
        """True when the leader must not send this peer another AppendEntries now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def maybe_update(self, index: int) -> bool:
        """Raise match to `index` (an acknowledgement); False when it is stale. Never lowers match or next."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """Move next back after a rejection of the AppendEntries whose prev index was `rejected`.

        False when the rejection is stale: in replicate, for an index at or below match; in
        probe, for anything but the probe outstanding. `match_hint` is the leader's guess of
        the last index the follower may share (fast backtracking, dissertation 5.3).
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def to_dict(self) -> dict:
        """A JSON-ready form for status()."""
        return {"match": self.match, "next": self.next, "state": str(self.state),
                "inflight": len(self.inflights), "inflight_bytes": self.inflights.bytes,
                "recent_active": self.recent_active}
