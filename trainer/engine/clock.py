"""The run's clocks: the training stopwatch, and how long the process took to start training."""

from __future__ import annotations

import os
import time
from pathlib import Path


class Stopwatch:
    """Training time only: paused around evaluation and checkpointing."""

    def __init__(self) -> None:
        self.total = 0.0
        self._since: float | None = None

    def start(self) -> None:
        self._since = time.perf_counter()

    def stop(self) -> float:
        if self._since is not None:
            self.total += time.perf_counter() - self._since
            self._since = None
        return self.total

    def read(self) -> float:
        """The total so far, running or not (a log line reads it without pausing it)."""
        running = time.perf_counter() - self._since if self._since is not None else 0.0
        return self.total + running


_FIRST_SEEN = time.perf_counter()  # where /proc is missing: from trainer's first import


def process_age() -> float:
    """Seconds since this process started: interpreter start, imports, config, building, all
    of it (Linux's /proc, in 10 ms ticks). Elsewhere, seconds since trainer was imported."""
    try:
        # Field 22 of /proc/self/stat, counted after the ")" that ends the command's name.
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _FIRST_SEEN
