"""A callback that delivers a real signal to its own process at a given step: a preemption
that lands at a known step, so the test knows where the run must stop."""

from __future__ import annotations

import os
import signal

from trainer.callbacks import Callback

# Several workers agree to stop about once a second (trainer/engine/preemption.py), so a
# signalled multi-worker run stops wherever the next agreement falls. The signalled run is
# PACED (at most 50 steps a second, whatever the CPU: the stop lands within about 60 steps
# of the signal) and STOPPABLE_STEPS leaves room for it; the reference and resumed runs are
# not paced (Pace changes nothing the run computes) and take only STOPPABLE_STEPS steps.
STOPPABLE_STEPS = 200
PACED = ("+callbacks.pace._target_=tests.helpers.pace.Pace", "+callbacks.pace.seconds=0.02")


class SignalAt(Callback):
    """Send ``signal`` (a name: SIGTERM, SIGUSR1, SIGINT) to this process after step ``step``
    on ``rank`` (null: every rank); ``times`` > 1 sends it again right away (a second
    SIGTERM while the run is stopping)."""

    def __init__(self, step: int, signal: str = "SIGTERM", rank: int | None = None,
                 times: int = 1) -> None:
        self.step, self.signum, self.rank, self.times = step, signal, rank, times

    def on_step_end(self, run) -> None:
        if run.step == self.step and self.rank in (None, run.rank):
            for _ in range(self.times):
                os.kill(os.getpid(), getattr(signal, self.signum))
