"""Per-step learning-rate schedules.

A schedule is a pure function of the step: ``factor(step)`` multiplies each parameter group's
base learning rate, and the loop writes the product into the optimizer before every step.
Being stateless, a schedule resumes exactly from the step alone. The base rates come from the
optimizer as the config built it, never from a checkpoint, so a resumed run neither reads back
an already-scaled ``lr`` nor ignores an ``optimizer.lr`` the user changed on purpose.

PyTorch's SGD keeps the learning rate outside the momentum buffer (v <- mu*v + g;
w <- w - lr*v), so changing lr between steps rescales only the next update, never the history.
"""

from __future__ import annotations

import torch


class Schedule:
    """Base: applies ``factor(step)`` to the optimizer's base learning rates."""

    def __init__(self) -> None:
        self.base_lrs: list[float] = []

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]

    def factor(self, step: int) -> float:
        raise NotImplementedError

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
    """The base learning rate at every step."""

    def factor(self, step: int) -> float:
        return 1.0
