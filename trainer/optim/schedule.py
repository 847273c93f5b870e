"""Per-step learning-rate schedules: gradual warmup, then constant, step, cosine or polynomial.

A schedule is a pure function of the step: ``factor(step)`` multiplies each parameter group's
base learning rate, and the loop writes the product into the optimizer before every step.
Being stateless, a schedule resumes exactly from the step alone. The base rates come from the
optimizer as the config built it, never from a checkpoint, so a resumed run neither reads back
an already-scaled ``lr`` nor ignores an ``optimizer.lr`` the user changed on purpose.

PyTorch's SGD keeps the learning rate outside the momentum buffer (v <- mu*v + g;
w <- w - lr*v), so changing lr between steps rescales only the next update, never the history;
with lr inside the buffer (v <- mu*v + lr*g) a warmup or decay would also rescale every past
gradient still in v, and the schedule would not mean what it says.

Warmup (Goyal et al. 2017, "gradual warmup"): over the first W steps the factor rises linearly
from ``warmup_start`` to 1, reaching 1 at step W; the decay then runs over the remaining steps,
with t = (step - W) / (total - W) going from 0 to 1.

A schedule may also grow the global batch at epoch boundaries (:class:`IncreaseBatch`, Smith
et al. 2017): :meth:`Schedule.global_batches` gives each epoch's batch, so epochs can differ in
length, and every epoch-based setting (warmup epochs, milestones) counts real epochs.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence

import torch

from trainer.errors import UserError


class Schedule:
    """Base: warmup, then ``decay(t)``; subclasses define ``decay``."""

    def __init__(self, warmup_steps: int = 0, warmup_epochs: float = 0.0,
                 warmup_start: float = 0.0) -> None:
        if warmup_steps < 0 or warmup_epochs < 0:
            raise UserError("schedule.warmup_steps and schedule.warmup_epochs must be >= 0")
        if warmup_steps and warmup_epochs:
            raise UserError(
                "set schedule.warmup_steps or schedule.warmup_epochs, not both "
                f"(got {warmup_steps} steps and {warmup_epochs} epochs)"
            )
        if not 0.0 <= warmup_start <= 1.0:
            raise UserError(f"schedule.warmup_start={warmup_start} must be in [0, 1]")
        self.warmup_steps_asked, self.warmup_epochs = warmup_steps, warmup_epochs
        self.warmup_start = warmup_start
        self.base_lrs: list[float] = []
        self.epoch_starts = [0]  # the first step of each epoch, and one past the last
        self.total_steps = 1
        self.warmup = 0

    def global_batches(self, batch_size: int, num_samples: int, epochs: int) -> list[int]:
        """The global batch of each epoch (constant here; see IncreaseBatch)."""
        return [batch_size] * epochs

    def attach(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int | Sequence[int] = 1,
               total_steps: int = 1) -> None:
        """Bind to the optimizer's configured rates and the run's length.

        ``steps_per_epoch``: one number, or the steps of each epoch when they differ.
        """
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.total_steps = max(1, total_steps)
        per_epoch = ([max(1, steps_per_epoch)] * max(1, -(-self.total_steps // steps_per_epoch))
                     if isinstance(steps_per_epoch, int) else [max(1, n) for n in steps_per_epoch])
        self.epoch_starts = [0, *itertools.accumulate(per_epoch)]
        self.warmup = self.warmup_steps_asked or round(self.step_at(self.warmup_epochs))
        # A warmup as long as the run never reaches the configured rate (1000 warmup steps in
        # a 23-step run trains at lr/1000): a number meant for another run length. Measured
        # against the run's epochs: trainer.max_steps cuts a run short on purpose (a smoke
        # test of a recipe), and is not refused for stopping inside the warmup.
        length = self.epoch_starts[-1]
        if self.warmup and self.warmup >= length:
            asked = (f"schedule.warmup_steps={self.warmup_steps_asked}" if self.warmup_steps_asked
                     else f"schedule.warmup_epochs={self.warmup_epochs} ({self.warmup} steps)")
            raise UserError(
                f"{asked} is not shorter than the run ({length} steps, "
                f"{len(self.epoch_starts) - 1} epochs): the learning rate would never reach "
                "optimizer.lr; use a shorter warmup (a few percent of the run is usual)")
        self._refuse_unreached(getattr(self, "milestones", ()))

    def _refuse_unreached(self, milestones: Sequence[float]) -> None:
        """Milestone epochs the run never reaches (a schedule meant for a longer run, or
        epochs counted from 1) are refused; trainer.max_steps is not checked (see warmup)."""
        epochs = len(self.epoch_starts) - 1
        late = [m for m in milestones if m >= epochs]
        if late:
            raise UserError(
                f"schedule.milestones=[{','.join(f'{m:g}' for m in milestones)}]: epoch "
                f"{late[0]:g} is never reached in this run of {epochs} epochs (counted from 0: "
                f"the last is {epochs - 1}); use milestones within the run (or more "
                "trainer.epochs)")

    def epoch_at(self, step: int) -> float:
        """Fractional epoch of a step (epoch e starts at e.0)."""
        starts = self.epoch_starts
        e = min(max(bisect.bisect_right(starts, step) - 1, 0), len(starts) - 2)
        return e + (step - starts[e]) / (starts[e + 1] - starts[e])

    def step_at(self, epoch: float) -> float:
        """The step at a fractional epoch (the inverse of epoch_at)."""
        e = min(int(epoch), len(self.epoch_starts) - 2)
        starts = self.epoch_starts
        return starts[e] + (epoch - e) * (starts[e + 1] - starts[e])

    def decay(self, t: float, step: int) -> float:
        """Factor after warmup: t goes from 0 to 1 over the remaining steps."""
        raise NotImplementedError

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return self.warmup_start + (1.0 - self.warmup_start) * (step + 1) / self.warmup
        span = max(1, self.total_steps - self.warmup)
        return self.decay(min(1.0, (step - self.warmup) / span), step)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's lr for ``step`` (0-based) and return the first group's."""
        factor = self.factor(step)
        for group, base in zip(optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        return optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        """State beyond the step (none for a pure function of the step)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Constant(Schedule):
    """The base learning rate after warmup."""

    def decay(self, t: float, step: int) -> float:
        return 1.0


class Step(Schedule):
    """Multiply by ``gamma`` at each milestone epoch (counted from the start of training)."""

    def __init__(self, milestones: Sequence[float] = (), gamma: float = 0.1, **warmup) -> None:
        super().__init__(**warmup)
        if not 0 < gamma <= 1:
            raise UserError(f"schedule.gamma={gamma} must be in (0, 1]")
        self.milestones = sorted(float(m) for m in milestones)
        self.gamma = gamma

    def decay(self, t: float, step: int) -> float:
        epoch = self.epoch_at(step)
        return self.gamma ** sum(epoch >= m for m in self.milestones)


class Cosine(Schedule):
    """Half a cosine from 1 down to ``min_factor`` over the steps after warmup."""

    def __init__(self, min_factor: float = 0.0, **warmup) -> None:
        super().__init__(**warmup)
        self.min_factor = _final_factor(min_factor)

    def decay(self, t: float, step: int) -> float:
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))


def _final_factor(value: float) -> float:
    """A decay's end as a share of the rate: below 0 the rate turns negative (gradient
    ascent), above 1 the "decay" raises it."""
    if not 0 <= value <= 1:
        raise ValueError(f"min_factor={value}: use a share of optimizer.lr in [0, 1]")
    return value


class Poly(Schedule):
    """(1 - t) ** power down to ``min_factor`` (You et al. use power 2 for LARS)."""

    def __init__(self, power: float = 2.0, min_factor: float = 0.0, **warmup) -> None:
        super().__init__(**warmup)
        if not power > 0:  # (1 - t) ** -1 grows: a "decay" that raises the rate
            raise ValueError(f"power={power}: use a power > 0 (2 is LARS's)")
        self.power, self.min_factor = power, _final_factor(min_factor)

    def decay(self, t: float, step: int) -> float:
        return self.min_factor + (1 - self.min_factor) * (1 - t) ** self.power


class IncreaseBatch(Schedule):
    """Grow the global batch instead of decaying the learning rate (Smith et al. 2017).

    "Don't decay the learning rate, increase the batch size": where a step schedule would
    divide the rate by ``factor`` at a milestone epoch, multiply the global batch by ``factor``
    instead; the noise scale of SGD (~ lr x N / B) falls the same way, with fewer, larger
    steps. Once the batch would pass ``max_batch_size`` (or the training set), it stays put
    and the rate is divided by ``factor`` at the remaining milestones, as in the paper.

    Args:
        milestones: whole epochs at which to grow the batch.
        factor: integer growth per milestone (>= 2); the paper uses 5.
        max_batch_size: the largest global batch (null: the training set size).
    """

    def __init__(self, milestones: Sequence[int] = (), factor: int = 5,
                 max_batch_size: int | None = None, **warmup) -> None:
        super().__init__(**warmup)
        if factor < 2 or int(factor) != factor:
            raise UserError(f"schedule.factor={factor} must be a whole number >= 2")
        if any(float(m) != int(m) or m < 1 for m in milestones):
            raise UserError(
                f"schedule.milestones={list(milestones)}: the batch changes between epochs, so "
                "milestones must be whole epochs >= 1"
            )
        if max_batch_size is not None and max_batch_size < 1:
            raise UserError(f"schedule.max_batch_size={max_batch_size} must be >= 1 or null")
        self.milestones = sorted(int(m) for m in milestones)
        self.growth, self.max_batch_size = int(factor), max_batch_size
        self.lr_divisions: list[int] = []  # per epoch: milestones passed with the batch capped

    def global_batches(self, batch_size: int, num_samples: int, epochs: int) -> list[int]:
        limit = min(self.max_batch_size or num_samples, num_samples)
        batches, self.lr_divisions = [], []
        for epoch in range(epochs):
            batch, divisions = batch_size, 0
            for m in self.milestones:
                if epoch < m:
                    break
                if batch * self.growth <= limit:
                    batch *= self.growth
                else:
                    divisions += 1
            batches.append(batch)
            self.lr_divisions.append(divisions)
        return batches

    def decay(self, t: float, step: int) -> float:
        if not self.lr_divisions:
            return 1.0
        epoch = min(int(self.epoch_at(step)), len(self.lr_divisions) - 1)
        return self.growth ** -self.lr_divisions[epoch]
