"""Gradient clipping, applied to the averaged gradient once per optimizer step.

``trainer.clip_grad_value=v`` clamps every gradient element to [-v, v]; then
``trainer.clip_grad_norm=c`` rescales all gradients together so that their global L2 norm is at
most c (Pascanu et al. 2013)::

    g <- g * min(1, c / ||g||),   ||g|| = sqrt(sum over every parameter of sum(g_i^2))

The step applies it where the gradient is final: after the backend averaged it (DDP's hooks,
Horovod's ``synchronize()``), after the last micro-batch of an accumulated step, after a loss
scaler unscaled it (a step whose gradients overflowed is still skipped by the scaler), and
before the optimizer, so LARS and LAMB compute their trust ratios on the clipped gradient. It is
the same computation on every worker (they hold the same averaged gradient), so N workers
clip exactly as one does. It runs as the built-in callback ``clip_grad`` (the step's
``on_before_optimizer_step`` hook: the loop and the step never name it), which also reports the
norm before clipping (``train/grad_norm``) and the share of steps clipped
(``train/grad_clipped``) at every log line.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from trainer.callbacks import Callback


class GradClip(Callback):
    """Clip by value and/or by global norm; remembers each step's norm before clipping (a
    device tensor: reading it every step would stall the pipeline) for the log line.

    Args:
        max_norm: the largest global L2 norm (> 0), or None.
        max_value: the largest absolute value of a gradient element (> 0), or None.
    """

    def __init__(self, max_norm: float | None = None, max_value: float | None = None) -> None:
        for name, value in (("max_norm", max_norm), ("max_value", max_value)):
            if value is not None and not 0 < value < float("inf"):
                raise ValueError(f"Invalid {name}: {value}")
        self.max_norm, self.max_value = max_norm, max_value
        self.norms: list[torch.Tensor] = []  # since the last log line

    def __call__(self, parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
        """Clip the gradients in place; the global norm they had before."""
        params = [p for p in parameters if p.grad is not None]  # frozen ones have none
        grads = [p.grad for p in params]
        norm = torch.nn.utils.get_total_norm(grads)
        if self.max_value is not None:
            torch.nn.utils.clip_grad_value_(params, self.max_value)
        if self.max_norm is not None:
            after = norm if self.max_value is None else torch.nn.utils.get_total_norm(grads)
            torch.nn.utils.clip_grads_with_norm_(params, self.max_norm, after)
        self.norms.append(norm.detach())
        return norm

    def take(self) -> tuple[float, float] | None:
        """(mean norm before clipping, fraction of steps whose norm exceeded max_norm) since
        the last call; None when no step ran."""
        if not self.norms:
            return None
        norms = torch.stack(self.norms).double()
        self.norms.clear()
        clipped = float((norms > self.max_norm).double().mean()) if self.max_norm else 0.0
        return float(norms.mean()), clipped

    def on_before_optimizer_step(self, run, optimizer) -> None:
        self(run.model.parameters())

    def on_log(self, run, metrics: dict[str, float]) -> None:
        taken = self.take()
        if taken is None:
            return
        norm, clipped = taken
        run.logger.scalars({"train/grad_norm": norm, "train/grad_clipped": clipped}, run.step)
        run.logger.note(f"grad norm {norm:.3g}" + (f" ({clipped:.0%} clipped)"
                                                   if self.max_norm else ""))
