"""What one `raftlog bench` run is asked to do (its settings), and how it fails."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

CLUSTER_ID = "raftlog-bench"


@dataclass
class BenchConfig:
    """One run's settings (the options of `raftlog bench`)."""

    nodes: int = 3
    payload: int = 100
    duration: float = 10.0
    count: Optional[int] = None     # stop after this many committed entries instead of `duration`
    clients: int = 4
    inflight: int = 4
    batch: int = 512
    rate: Optional[float] = None    # open loop: offered entries/s
    sync: bool = True
    impl: str = "cython"
    data: Optional[str] = None
    keep: bool = False
    warmup: float = 1.0             # seconds of load before measuring (duration mode)
    tls: bool = False               # mutual TLS on every connection (a throw-away CA made for the run)
    embedded: bool = False          # the members run in this process (raftlog.open), the load calls append


class BenchError(Exception):
    """The run could not be completed (a node failed, no leader, ...)."""
