"""Stopping when the cluster asks, and checkpoints by the clock, agreed by every rank.

SLURM (``--signal``, ``scancel``, the time limit), Kubernetes and a stopping torchrun agent
send SIGTERM; SLURM's advance warning is often SIGUSR1; Ctrl-C is SIGINT. The handler only
records the first signal (a second one, even in the middle of a checkpoint write, changes
nothing). At every step boundary :meth:`Preemption.poll` tells the loop whether to stop: with
several workers each rank's flags are summed in one small asynchronous reduction that is read
one step later, so every rank stops after the SAME step (no rank is left waiting in a gradient
all-reduce the others left) and the step pays no host synchronisation. The loop then saves a
checkpoint of that step and ends with :class:`trainer.errors.Preempted` (exit 128 + signal).

``trainer.checkpoint_every_minutes`` rides the same reduction: the primary rank's clock says
when, every rank saves at the same step.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

import torch

from trainer.parallel.backends import Backend

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preemption:
    """The stop and timed-checkpoint flags of one run (see the module docstring)."""

    def __init__(self, backend: Backend, checkpoint_minutes: float | None = None) -> None:
        self.backend = backend
        self.received = 0  # the first signal's number; 0: none yet
        self.interval = checkpoint_minutes * 60 if checkpoint_minutes else None
        self.last_save = time.monotonic()
        self._previous: dict[int, object] = {}
        self._pending: Callable[[], torch.Tensor] | None = None
        self._alone = backend.world_size == 1

    def install(self) -> None:
        """Catch the signals (main thread only: Python delivers signals there; a run started
        from another thread keeps the process's handlers and cannot be preempted cleanly)."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: SIGTERM/SIGUSR1/SIGINT end the run without "
                        "a checkpoint")
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self, settle: bool = True) -> None:
        """Put the handlers that were there before back; finish the reduction in flight
        (``settle``: every rank is alive and started it; not after a worker was lost)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if settle:
            self.settle()
        self._pending = None

    def settle(self) -> None:
        """Wait for the reduction in flight, if any (every rank has started it)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending()

    def _handle(self, signum: int, frame) -> None:
        if self.received:
            log.warning("%s received again: already stopping at the next step boundary",
                        signal.Signals(signum).name)
            return
        self.received = signum
        log.warning("%s received: stopping after this step, then writing a checkpoint",
                    signal.Signals(signum).name)

    def _local(self) -> tuple[int, bool]:
        due = (self.interval is not None and self.backend.is_primary
               and time.monotonic() - self.last_save >= self.interval)
        return self.received, due

    def poll(self) -> tuple[int, bool]:
        """``(signal number to stop on or 0, whether to checkpoint now)``, the same on every
        rank at the same step."""
        if self._alone:
            return self._local()
        agreed = (0, False)
        if self._pending is not None:
            flags = self._pending()
            # Several signals: the first in SIGNALS that any rank received.
            agreed = (next((int(s) for s, n in zip(SIGNALS, flags[:-1].tolist(), strict=True)
                            if n > 0), 0), bool(flags[-1] > 0))
        received, due = self._local()
        flags = torch.tensor([float(received == s) for s in SIGNALS] + [float(due)])
        self._pending = self.backend.sum_async(flags)
        return agreed

    def saved(self) -> None:
        """A checkpoint was just written: the clock starts again."""
        self.last_save = time.monotonic()
