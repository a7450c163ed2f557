"""What a run shows while it runs: setup notes, a live progress bar, or one line per interval.

The measured window (window.py) drives an observer: `window_started`, `sample` every
`period` seconds (warm-up included), `window_ended`. `Progress` itself shows nothing;
`Notes` prints notes on their own lines; `LiveBar` adds a bar that moves with live
entries/s and requests/s on a terminal (a note clears the bar's line, prints, and the bar
is drawn again below it); `IntervalLines` prints one line per `interval` seconds of the
window, like pgbench -P:

    progress: 1.0 s, 312345.0 entries/s, 610.0 requests/s, lat p50 1.234 ms p99 3.456 ms, 0 errors, 0 timeouts
"""
from __future__ import annotations

import time
from typing import Optional, TextIO

from raftlog.bench.stats import Stats, percentile

SAMPLE_SECONDS = 0.25         # progress and RSS sampling period
RATE_SECONDS = 0.5            # the live rates are taken over at least this long
BAR_WIDTH = 30
CLEAR_LINE = "\r\x1b[K"


class Progress:
    """An observer of the run that shows nothing."""

    period = SAMPLE_SECONDS

    def note(self, text: str) -> None:
        """A setup note (cluster up, data kept, ...)."""

    def window_started(self, stats: Stats, t0: float) -> None:
        """The measured window opens at perf_counter time `t0`."""

    def sample(self, stats: Stats, now: float) -> None:
        """Called every `period` seconds, in the warm-up and in the window."""

    def window_ended(self, stats: Stats, seconds: float) -> None:
        """The measured window closed after `seconds`."""

    def close(self) -> None:
        """The run is over (also on failure): leave the terminal on a fresh line."""


class Notes(Progress):
    """Prints every note on its own line of `stream`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def note(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


class LiveBar(Notes):
    """A one-line bar on a terminal: warm-up, then the window's share done, with live entries/s and requests/s.

    Duration mode fills with the window's time, count mode (`count`) with acknowledged entries.
    """

    def __init__(self, stream: TextIO, duration: float, count: Optional[int]) -> None:
        super().__init__(stream)
        self.duration = duration
        self.count = count
        self.t0: Optional[float] = None
        self.line = ""                       # what the bar's line shows now ('' when not drawn)
        self.rates = ""
        self._last = (time.perf_counter(), 0, 0)   # (time, total entries, total requests) of the last rate
        self._fraction = 0.0

    def note(self, text: str) -> None:
        self.stream.write(CLEAR_LINE + text + "\n" + self.line)
        self.stream.flush()

    def window_started(self, stats: Stats, t0: float) -> None:
        self.t0 = t0

    def sample(self, stats: Stats, now: float) -> None:
        t, entries, requests = self._last
        if now - t >= RATE_SECONDS:
            seconds = now - t
            self.rates = (f"{(stats.total_entries - entries) / seconds:>11,.0f} entries/s "
                          f"{(stats.total_requests - requests) / seconds:>9,.0f} requests/s")
            self._last = (now, stats.total_entries, stats.total_requests)
        if self.t0 is None:
            self._draw(f"warm-up   {self.rates}")
            return
        if self.count is not None:
            self._fraction = min(1.0, stats.entries / self.count)
        else:
            self._fraction = min(1.0, (now - self.t0) / self.duration)
        self._draw(self._bar())

    def window_ended(self, stats: Stats, seconds: float) -> None:
        self._fraction = 1.0
        self._draw(self._bar())

    def close(self) -> None:
        if self.line:
            self.stream.write("\n")
            self.stream.flush()
            self.line = ""

    def _bar(self) -> str:
        done = int(self._fraction * BAR_WIDTH)
        return f"[{'#' * done}{'-' * (BAR_WIDTH - done)}] {self._fraction * 100:3.0f}%  {self.rates}"

    def _draw(self, line: str) -> None:
        self.line = line
        self.stream.write(CLEAR_LINE + line)
        self.stream.flush()


class IntervalLines(Notes):
    """One line per `interval` seconds of the measured window: that interval's rates, latency and failures.

    A line covers the time since the previous one (at least `interval`; the sampling
    period is a fifth of it, so a line is at most a fifth late). Nothing is printed for a
    last stretch shorter than `interval`.
    """

    def __init__(self, stream: TextIO, interval: float) -> None:
        super().__init__(stream)
        self.interval = interval
        self.period = min(SAMPLE_SECONDS, interval / 5)
        self.t0: Optional[float] = None
        self._last = (0.0, 0, 0, 0, 0, 0)    # (time, entries, requests, samples, errors, timeouts) at the last line

    def window_started(self, stats: Stats, t0: float) -> None:
        self.t0 = t0
        self._last = (t0, stats.entries, stats.requests, len(stats.latencies), stats.errors, stats.timeouts)

    def sample(self, stats: Stats, now: float) -> None:
        if self.t0 is None or now - self._last[0] < self.interval:
            return
        t, entries, requests, samples, errors, timeouts = self._last
        seconds = now - t
        lat = sorted(stats.latencies[samples:])
        latency = (f"lat p50 {percentile(lat, 0.5) * 1e3:.3f} ms p99 {percentile(lat, 0.99) * 1e3:.3f} ms"
                   if lat else "lat - ms")
        self.stream.write(f"progress: {now - self.t0:.1f} s, {(stats.entries - entries) / seconds:.1f} entries/s, "
                          f"{(stats.requests - requests) / seconds:.1f} requests/s, {latency}, "
                          f"{stats.errors - errors} errors, {stats.timeouts - timeouts} timeouts\n")
        self.stream.flush()
        self._last = (now, stats.entries, stats.requests, len(stats.latencies), stats.errors, stats.timeouts)
