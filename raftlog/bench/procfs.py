"""CPU seconds and memory of a process, read from /proc, and their record over a run."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of process `pid` in MiB, from /proc (0 when it is gone)."""
    rss = hwm = 0.0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss, hwm


@dataclass
class ProcessUsage:
    """What was measured about one process: CPU seconds over a window, RSS samples and peak RSS."""

    pid: int
    cpu_start: float = 0.0
    cpu_s: float = 0.0
    rss_mb: float = 0.0
    rss_samples: list[float] = field(default_factory=list)

    def sample(self) -> None:
        """Record the current RSS (for the flatness check) and the peak RSS so far."""
        rss, hwm = memory_mb(self.pid)
        if rss:
            self.rss_samples.append(rss)
        self.rss_mb = max(self.rss_mb, hwm)

    def mark_cpu(self) -> None:
        """Start of the measured window for CPU seconds."""
        self.cpu_start = cpu_seconds(self.pid)

    def read_cpu(self) -> None:
        """End of the measured window for CPU seconds."""
        self.cpu_s = max(0.0, cpu_seconds(self.pid) - self.cpu_start)
