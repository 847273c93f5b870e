"""When the loop evaluates and checkpoints between epoch ends.

The default counts optimizer steps (``trainer.eval_every``, ``trainer.checkpoint_every``; 0:
evaluate at each epoch end only). A component whose run measures its length in other units
(AdaScale's scale-invariant progress) sets ``run.cadence`` to one counting those, so the same
numbers mean the same point of training at any batch size; the loop only asks ``due``.
"""

from __future__ import annotations

import math
from collections.abc import Callable


class StepCadence:
    """Every ``eval_every`` / ``checkpoint_every`` optimizer steps (0: none between epoch
    ends; a checkpoint is written at every epoch end anyway)."""

    def __init__(self, eval_every: int, checkpoint_every: int) -> None:
        self.eval_every, self.checkpoint_every = eval_every, checkpoint_every
        # Without a step count, the loop evaluates at each epoch end.
        self.eval_at_epoch_end = not eval_every

    def due(self, step: int) -> tuple[bool, bool]:
        """(evaluate, checkpoint) after optimizer step ``step``."""
        return (bool(self.eval_every) and step % self.eval_every == 0,
                bool(self.checkpoint_every) and step % self.checkpoint_every == 0)


class ProgressCadence:
    """Every ``eval_every`` / ``checkpoint_every`` units of a progress measure that grows by a
    variable amount per step (AdaScale: base-batch steps), due at the first step that crosses
    each multiple. With ``eval_every`` 0, evaluations fall where ``epoch_of(progress)`` crosses
    a whole number (a base-batch epoch) instead of at the loader's own epoch ends.

    Args:
        progress: the measure now (read after each step).
        epoch_of: the measure in epochs, for ``eval_every`` 0.
    """

    def __init__(self, progress: Callable[[], float], epoch_of: Callable[[float], float],
                 eval_every: int, checkpoint_every: int) -> None:
        self.progress, self.epoch_of = progress, epoch_of
        self.eval_every, self.checkpoint_every = eval_every, checkpoint_every
        self.eval_at_epoch_end = False
        # The multiples already passed (from the progress a resumed run starts at).
        self.evals, self.saves = self._evals(), self._saves()

    def _evals(self) -> int:
        value = self.progress()
        if self.eval_every:
            return math.floor(value / self.eval_every)
        return math.floor(self.epoch_of(value) + 1e-9)  # (an epoch's end, not its rounding)

    def _saves(self) -> int:
        return math.floor(self.progress() / self.checkpoint_every) if self.checkpoint_every else 0

    def due(self, step: int) -> tuple[bool, bool]:
        evals, saves = self._evals(), self._saves()
        due = (evals > self.evals, saves > self.saves)
        self.evals, self.saves = evals, saves
        return due
