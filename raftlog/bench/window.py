"""The measured window of a run, shared by both load drivers: warm-up, then measuring, sampled for progress.

A driver keeps its load going on its own; this only decides when the window opens and
closes (after `warmup` seconds; then after `duration` seconds, or once `count` entries were
acknowledged in the window), flips `Stats.measuring`, and hands the progress observer the
stats every sampling period.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable, Optional

from raftlog.bench.config import BenchConfig
from raftlog.bench.progress import Progress
from raftlog.bench.stats import Stats


async def measure_window(cfg: BenchConfig, stats: Stats, progress: Progress, *, warmup: float,
                         check: Callable[[], None], on_start: Callable[[], None] = lambda: None,
                         on_end: Callable[[], None] = lambda: None) -> float:
    """Run the warm-up and the measured window; the window's length in seconds.

    `check()` runs every sampling period and raises to end the run (a failed load or node);
    `on_start()` and `on_end()` run as the window opens and closes (CPU accounting).
    """
    if warmup > 0:
        await _wait(stats, progress, check, warmup, None)
    stats.measuring = True
    on_start()
    t0 = time.perf_counter()
    progress.window_started(stats, t0)
    await _wait(stats, progress, check, cfg.duration if cfg.count is None else None, cfg.count)
    seconds = time.perf_counter() - t0
    stats.measuring = False
    on_end()
    progress.window_ended(stats, seconds)
    return seconds


async def _wait(stats: Stats, progress: Progress, check: Callable[[], None], seconds: Optional[float],
                count: Optional[int]) -> None:
    """Sample until `seconds` passed or `count` entries were acknowledged in the window."""
    start = time.perf_counter()
    period = progress.period if seconds is None else min(progress.period, seconds / 4)
    while True:
        await asyncio.sleep(period)
        check()
        progress.sample(stats, time.perf_counter())
        if seconds is not None and time.perf_counter() - start >= seconds:
            return
        if count is not None and stats.entries >= count:
            return
