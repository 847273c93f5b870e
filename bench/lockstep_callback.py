"""The lockstep's turns (bench/lockstep.py) inside a ``trainer`` run, as a user's callback::

    trainer recipe=mnist +callbacks.lockstep._target_=bench.lockstep_callback.LockstepTurns

Its turns cover what trainer's own training clock covers (each epoch's steps and log lines;
evaluation and checkpoints excluded); ``lockstep_samples_per_sec`` and ``lockstep_turns`` go
into metrics.json. It only overrides the hooks it needs: the per-step one is a modulo and a
comparison, and counts against trainer in the comparison.
"""

from __future__ import annotations

from bench.lockstep import Turns
from trainer.callbacks import Callback


class LockstepTurns(Callback):
    def __init__(self) -> None:
        self.turns = Turns.from_env()
        self.first_samples: int | None = None

    def on_epoch_start(self, run) -> None:
        if self.first_samples is None:
            self.first_samples = run.progress.samples
        self.turns.resume()

    def on_step_end(self, run) -> None:
        progress = run.progress
        if progress.batch >= len(run.loader) or progress.step >= run.total_steps:
            self.turns.pause()  # the epoch's last step: evaluation and a checkpoint follow
        else:
            self.turns.step(progress.step)

    def on_fit_end(self, run, metrics) -> None:
        seconds = self.turns.seconds()
        if seconds > 0:
            samples = run.progress.samples - self.first_samples
            metrics["lockstep_samples_per_sec"] = samples / seconds
            metrics["lockstep_turns"] = self.turns.turns
