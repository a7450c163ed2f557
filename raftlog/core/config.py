"""Config: the engine's tunables, in ticks and bytes, validated when built."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Config:
    """How one RawNode behaves. Time is in ticks (the runtime's default tick is 10 ms).

    `voters` is the bootstrap configuration, used only when storage has no conf_state.
    `election_ticks` is the half-open range `[lo, hi)` the randomized election timeout is
    drawn from (default 150-300 ms); `lo` is also the leader's check-quorum period and the
    follower's leader lease (dissertation 9.6 / 6.2). `applied` is the index the state
    machine had already applied before a restart: committed entries are handed out from
    `applied + 1`. `addresses` ((id, HOST:PORT) pairs) go into the bootstrap configuration so
    that membership changes can replicate every member's address. `join` starts a node that
    knows no configuration at all: it waits, never campaigning, for a leader to add it and
    send it the log (which carries the configuration).
    """

    node_id: int
    voters: tuple[int, ...] = ()
    election_ticks: tuple[int, int] = (15, 30)
    heartbeat_ticks: int = 5
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 32 << 20
    max_msg_bytes: int = 1 << 20
    max_uncommitted_bytes: int = 64 << 20
    max_cache_bytes: int = 64 << 20
    max_committed_bytes: int = 16 << 20
    # InstallSnapshot (core/snapshot.py): bytes per chunk, and chunks unacknowledged at once.
    snapshot_chunk_bytes: int = 1 << 20
    snapshot_window_chunks: int = 4
    applied: int = 0
    addresses: tuple[tuple[int, str], ...] = ()
    join: bool = False

    def __post_init__(self) -> None:
        self.voters = tuple(int(v) for v in self.voters)
        self.election_ticks = (int(self.election_ticks[0]), int(self.election_ticks[1]))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.node_id <= 0:
            raise ValueError("node_id must be > 0")
        if len(set(self.voters)) != len(self.voters) or any(v <= 0 for v in self.voters):
            raise ValueError(f"voters must be distinct ids > 0, got {self.voters}")
        lo, hi = self.election_ticks
        if self.heartbeat_ticks <= 0:
            raise ValueError("heartbeat_ticks must be > 0")
        if lo <= self.heartbeat_ticks:
            raise ValueError("election_ticks must start above heartbeat_ticks")
        if hi <= lo:
            raise ValueError("election_ticks must be a non-empty range [lo, hi)")
        for name in ("max_inflight_msgs", "max_inflight_bytes", "max_msg_bytes",
                     "max_uncommitted_bytes", "max_cache_bytes", "max_committed_bytes",
                     "snapshot_chunk_bytes", "snapshot_window_chunks"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.applied < 0:
            raise ValueError("applied must be >= 0")
