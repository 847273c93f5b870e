"""The interface every data-parallel backend implements.

The run loop talks to a backend only through these methods, so torch.distributed and Horovod
tricks stay inside their own files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from trainer.errors import UserError
from trainer.parallel import identity


class Backend:
    """One process, no communication: the reference every multi-worker backend must match."""

    name = "none"

    def __init__(self, device: torch.device, ident: identity.Identity | None = None) -> None:
        self.device = device
        self.identity = ident if ident is not None else identity.Identity()

    @property
    def rank(self) -> int:
        return self.identity.rank

    @property
    def world_size(self) -> int:
        return self.identity.world_size

    @property
    def is_primary(self) -> bool:
        return self.identity.is_primary

    @property
    def description(self) -> str:
        """What carries the collectives, for the run's first lines."""
        return "one process"

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Return the module whose backward averages gradients across workers."""
        return model

    def release(self, optimizer: torch.optim.Optimizer) -> None:
        """Detach what ``wrap_model``/``wrap_optimizer`` hooked into the parameters, before
        they are called again for another set of trainable parameters (``trainer.stages``)."""

    @property
    def can_split_steps(self) -> bool:
        """Whether a step may take more micro-batches than the backend was built for."""
        return True

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer,
                       model: torch.nn.Module) -> torch.optim.Optimizer:
        """Return the optimizer to step (Horovod's averages gradients; others pass through)."""
        return optimizer

    def step_context(self, optimizer: torch.optim.Optimizer):
        """Context around ``optimizer.step()`` (and a loss scaler's unscale)."""
        return contextlib.nullcontext()

    def no_sync(self, model: torch.nn.Module):
        """Context in which backward accumulates gradients locally (no communication)."""
        return contextlib.nullcontext()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over all workers (in place, and returned)."""
        return tensor

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's copy of a small picklable object, on every rank."""
        return obj

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        return [obj]

    def barrier(self) -> None:
        """Wait for every rank (one process: nothing to wait for)."""

    def on_primary(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 only and hand its result, or its UserError, to every rank,
        so that every rank fails with rank 0's message instead of waiting for it."""
        outcome = None
        if self.is_primary:
            try:
                outcome = ("ok", fn())
            except UserError as exc:
                outcome = ("error", str(exc))
        kind, value = self.broadcast_object(outcome)
        if kind == "error":
            raise UserError(value)
        return value

    def first_on_each_node(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on each node's local rank 0 first (it may download), then on the
        others; a UserError on any leader stops every rank."""
        leader = self.identity.local_rank == 0
        result, error = None, None
        if leader:
            try:
                result = fn()
            except UserError as exc:
                error = exc
        failed = self.all_reduce_sum(torch.ones(1, device=self.device) * (error is not None))
        if failed.item() > 0:
            raise error or UserError("building the data or model failed on another rank; see "
                                     "its message")
        return result if leader else fn()

    def explain_failure(self, exc: BaseException) -> str | None:
        """One line for an error that means another worker is gone, else None (a real bug)."""
        return None

    def user_error(self, exc: BaseException) -> str | None:
        """One line for an error the user's model or config caused that the backend reports
        in its own words (DDP's unused parameters), else None."""
        return None

    def close(self) -> None:
        """Release communicators; safe to call twice."""
