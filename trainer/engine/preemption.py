"""Stopping when the cluster asks, and checkpoints by the clock, agreed by every rank.

SLURM (``--signal``, ``scancel``, the time limit), Kubernetes and a stopping torchrun agent
send SIGTERM; SLURM's advance warning is often SIGUSR1 (our sbatch script's), and SIGUSR2 under
submitit (Hydra's submitit launcher), whose own handler, chained after our checkpoint by the
``trainer`` command, requeues the job; Ctrl-C is SIGINT. The handler only
records the first signal (a second one, even in the middle of a checkpoint write, changes
nothing). At step boundaries :meth:`Preemption.poll` tells the loop whether to stop. One
process reads its own flag every step. Several workers sum their flags in one small all-reduce
about once a second (:data:`POLL_SECONDS`): the primary rank proposes, inside that same
reduction, how many steps from now the next one happens (from its measured step time), so
every rank polls at the same steps, stops after the SAME step (no rank is left waiting in a
gradient all-reduce the others left), and the steps in between pay nothing: a reduction every
step cost 10% of a small model's samples/s on 2 CPU workers. The loop then saves a checkpoint
of that step and ends with :class:`trainer.errors.Preempted` (exit 128 + signal).

``trainer.checkpoint_every_minutes`` rides the same reduction: the primary rank's clock says
when, every rank saves at the same step.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import torch

from trainer.parallel.backends import Backend

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
# Several workers agree about this often: a stop lands within this long after the signal
# (plus one step), far inside torchrun's 30 s grace period and SLURM's warning.
POLL_SECONDS = 1.0
_MAX_STEPS_BETWEEN_POLLS = 10_000


class Preemption:
    """The stop and timed-checkpoint flags of one run (see the module docstring)."""

    def __init__(self, backend: Backend, checkpoint_minutes: float | None = None) -> None:
        self.backend = backend
        self.received = 0  # the first signal's number; 0: none yet
        self.interval = checkpoint_minutes * 60 if checkpoint_minutes else None
        self.last_save = time.monotonic()
        self._previous: dict[int, object] = {}
        self._alone = backend.world_size == 1
        # Several workers: steps until the next agreement, and the steps and time between the
        # last two (the primary's step time, for its next proposal).
        self._countdown = self._gap = 1
        self._since = time.monotonic()

    def install(self) -> None:
        """Catch the signals (main thread only: Python delivers signals there; a run started
        from another thread keeps the process's handlers and cannot be preempted cleanly)."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: SIGTERM/SIGUSR1/SIGUSR2/SIGINT end the run "
                        "without a checkpoint")
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        """Put the handlers that were there before back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.received:
            log.warning("%s received again: already stopping at the next step boundary",
                        signal.Signals(signum).name)
            return
        self.received = signum
        log.warning("%s received: stopping at the next step boundary, then writing a "
                    "checkpoint", signal.Signals(signum).name)

    def _local(self) -> tuple[int, bool]:
        due = (self.interval is not None and self.backend.is_primary
               and time.monotonic() - self.last_save >= self.interval)
        return self.received, due

    def poll(self, asked: bool = False) -> tuple[int, bool, bool]:
        """``(signal number to stop on or 0, whether to checkpoint now, whether any rank asked
        to stop)``, called after every step with whether this rank's run asked to stop
        (``run.request_stop``); the same on every rank at the same step."""
        if self._alone:
            return (*self._local(), asked)
        self._countdown -= 1
        if self._countdown > 0:
            return 0, False, False
        received, due = self._local()
        flags = [float(received == s) for s in SIGNALS] + [float(due), float(asked),
                                                           self._proposal()]
        # On the backend's device (NCCL reduces CUDA tensors only); read back once a second.
        flags = torch.tensor(flags, dtype=torch.float64, device=self.backend.device)
        summed = self.backend.all_reduce_sum(flags).tolist()
        self._countdown = self._gap = int(summed[-1])  # the primary's; the others add 0
        # Several signals: the first in SIGNALS that any rank received.
        stop = next((int(s) for s, n in zip(SIGNALS, summed, strict=False) if n > 0), 0)
        return stop, summed[len(SIGNALS)] > 0, summed[len(SIGNALS) + 1] > 0

    def _proposal(self) -> float:
        """Steps until the next agreement, about POLL_SECONDS from the primary's step time
        (evaluation and checkpoints in between only make it poll sooner); 0 elsewhere."""
        now, since = time.monotonic(), self._since
        self._since = now
        if not self.backend.is_primary:
            return 0.0
        per_step = max((now - since) / self._gap, 1e-9)
        return float(min(max(int(POLL_SECONDS / per_step), 1), _MAX_STEPS_BETWEEN_POLLS))

    def saved(self) -> None:
        """A checkpoint was just written: the clock starts again."""
        self.last_save = time.monotonic()
