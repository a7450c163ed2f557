"""What the load of a run saw: acknowledged entries and requests, their latencies, failures."""
from __future__ import annotations

import math
from array import array


class Stats:
    """Counters a load driver updates as answers arrive; the measured window's counts only while `measuring`.

    `errors` counts every request that failed over the whole run (warm-up and drain
    included): answered with an error, or never answered; `timeouts` counts those of them
    that timed out (answered with a timeout, or still unanswered when the run gave up
    waiting). A latency sample is taken per request acknowledged in the window, so
    `len(latencies) == requests`.
    """

    def __init__(self) -> None:
        self.measuring = False
        self.entries = 0            # acknowledged entries while measuring
        self.total_entries = 0      # acknowledged entries, warm-up included
        self.requests = 0           # acknowledged requests while measuring
        self.total_requests = 0     # acknowledged requests, warm-up included
        self.latencies = array("d")  # seconds, one per request acknowledged while measuring
        self.acks: list[tuple[int, int, int]] = []   # (first_index, client, slot) of every ack
        self.errors = 0
        self.timeouts = 0
        self.redirects = 0


def percentile(sorted_values: "list[float] | array", q: float) -> float:
    """The q-quantile (0..1) of an ascending sequence, nearest-rank (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]
