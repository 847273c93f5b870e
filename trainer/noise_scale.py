"""The simple gradient noise scale B_simple (McCandlish et al. 2018), estimated while training.

B_simple = tr(Sigma) / |G|^2, with G the true gradient and Sigma the per-sample gradient
covariance, predicts the critical batch size: below it, doubling the batch nearly halves the
steps to a given loss; well above it, extra samples per step are mostly wasted.

The paper's Appendix A.1: with the squared norms of two gradient estimates of the same step at
batch sizes b < B, both unbiased estimators

    |G|^2  ~  (B |G_B|^2 - b |G_b|^2) / (B - b)
    tr(S)  ~  (|G_b|^2 - |G_B|^2) / (1/b - 1/B)

are too noisy on their own, so each is smoothed with an exponential moving average and
B_simple is the ratio of the two averages (with equal decay the EMA bias correction cancels in
the ratio). The two gradients:

- with ``trainer.accumulate`` >= 2 (any backend, Horovod included): b is the first
  micro-batch, B the whole step; free, so ``trainer.noise_scale=auto`` measures it;
- ``trainer.noise_scale=always`` with one backward per step: on several torch.distributed
  workers b is one worker's batch and B the global batch (each parameter's local gradient norm
  is read by a tensor hook before DDP averages it, and the local norms are averaged over
  workers, a better |G_b|^2 estimate, when the loop logs); in one process the step is split
  into two micro-batches.

Nothing here synchronises the host in the hot path: norms stay on the device until the loop's
next log line, when they are read with the losses.
"""

from __future__ import annotations

import math

import torch


class NoiseScale:
    """Two EMAs of the per-step estimates of |G|^2 and tr(Sigma), and their ratio.

    Args:
        decay: EMA decay per step, in [0, 1); 0.95 averages over roughly the last 20 steps.
    """

    def __init__(self, decay: float = 0.95) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"noise scale EMA decay={decay} must be in [0, 1)")
        self.decay = decay
        self.grad_sq = 0.0  # EMA of |G|^2 estimates
        self.trace = 0.0  # EMA of tr(Sigma) estimates
        self.steps = 0
        # (small_sq, big_sq, b_small, b_big) per step, norms still on the device.
        self.pending: list[tuple[torch.Tensor, torch.Tensor, int, int]] = []

    def record(self, small_sq: torch.Tensor, big_sq: torch.Tensor, b_small: int,
               b_big: int) -> None:
        """One step's squared gradient norms at batch sizes b_small < b_big."""
        self.pending.append((small_sq, big_sq, b_small, b_big))

    def update(self, small_sq: list[float], big_sq: list[float]) -> None:
        """Fold the pending steps in, given their norms read back (and averaged over workers)."""
        for s, g, (_, _, b, big) in zip(small_sq, big_sq, self.pending, strict=True):
            if not (math.isfinite(s) and math.isfinite(g)):
                continue  # an fp16 overflow step: the optimizer skipped it too
            grad_sq = (big * g - b * s) / (big - b)
            trace = (s - g) / (1.0 / b - 1.0 / big)
            self.grad_sq = self.decay * self.grad_sq + (1 - self.decay) * grad_sq
            self.trace = self.decay * self.trace + (1 - self.decay) * trace
            self.steps += 1
        self.pending.clear()

    @property
    def value(self) -> float | None:
        """The current B_simple, or None before any step or while |G|^2 looks like 0."""
        if self.steps == 0 or self.grad_sq <= 0:
            return None
        return self.trace / self.grad_sq

    def state_dict(self) -> dict:
        return {"grad_sq": self.grad_sq, "trace": self.trace, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.grad_sq = state.get("grad_sq", 0.0)
        self.trace = state.get("trace", 0.0)
        self.steps = state.get("steps", 0)


def squared_norm(params) -> torch.Tensor:
    """Sum of squared gradient entries over ``params``, in float32, on their device."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum()
