"""Gradient-noise injection, kept identical on every data-parallel replica.

``noise=annealed`` (Neelakantan et al. 2015, "Adding Gradient Noise Improves Learning for Very
Deep Networks"): after the gradient is averaged over workers, at (0-based) step t

    g <- g + N(0, sigma_t^2),   sigma_t^2 = eta / (1 + t)^gamma,   gamma = 0.55

``noise=small_batch`` (Hoffer et al. 2017, "Train longer, generalize better", multiplicative
noise): each sample's loss is weighted by z_n ~ N(1, sigma^2), so the step's gradient is

    g_hat = (1/M) sum_n z_n g_n,   sigma^2 = M / B_small - 1

which gives the update at global batch M the covariance of one at the smaller batch B_small.

Both draw from a generator seeded by (trainer.seed, step) alone: every rank draws the same
numbers, the annealed noise lands on the already-averaged gradient, and the multiplicative
weights of global sample i are the same whichever rank holds it, so N workers still reproduce
one worker and replicas never drift apart.

The noise object is the built-in callback ``grad_noise``: the additive noise lands in its
``on_before_optimizer_step`` hook (after clipping, on the unscaled gradient); the
multiplicative weights are asked for by the step, as per-sample loss weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from trainer.callbacks import Callback
from trainer.errors import UserError


def _generator(seed: int, step: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, step, 0x6E6F]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class NoNoise(Callback):
    """The default: no noise."""

    def bind(self, seed: int) -> None:
        self.seed = seed

    def sample_weights(self, step: int, global_batch: int, rank: int,
                       world_size: int) -> torch.Tensor | None:
        """Per-sample loss weights for this rank's slice of the global batch, or None."""
        return None

    def perturb(self, params: Iterable[torch.nn.Parameter], step: int) -> None:
        """Add noise to the (averaged) gradients in place."""


class Annealed(NoNoise):
    """Additive Gaussian noise with variance eta / (1 + t)^gamma.

    Args:
        eta: variance at step 0 (> 0); Neelakantan et al. try 0.01, 0.3 and 1.0.
        gamma: decay exponent (>= 0); the paper's 0.55.
    """

    def __init__(self, eta: float = 0.01, gamma: float = 0.55) -> None:
        if eta <= 0 or gamma < 0:
            raise UserError(f"noise.eta={eta} must be > 0 and noise.gamma={gamma} >= 0")
        self.eta, self.gamma = eta, gamma

    def variance(self, step: int) -> float:
        return self.eta / (1 + step) ** self.gamma

    def on_before_optimizer_step(self, run, optimizer) -> None:
        self.perturb(run.model.parameters(), run.step)

    @torch.no_grad()
    def perturb(self, params: Iterable[torch.nn.Parameter], step: int) -> None:
        generator = _generator(self.seed, step)
        std = self.variance(step) ** 0.5
        for p in params:
            if p.grad is not None:
                noise = torch.randn(p.grad.shape, generator=generator, dtype=p.grad.dtype)
                p.grad.add_(noise.to(p.grad.device), alpha=std)


class SmallBatch(NoNoise):
    """Multiplicative per-sample noise matching the gradient covariance of ``small_batch``.

    Args:
        small_batch: the batch whose gradient noise to imitate (>= 1, below the global batch).
    """

    def __init__(self, small_batch: int = 128) -> None:
        if small_batch < 1:
            raise UserError(f"noise.small_batch={small_batch} must be >= 1")
        self.small_batch = small_batch

    def sample_weights(self, step: int, global_batch: int, rank: int,
                       world_size: int) -> torch.Tensor | None:
        variance = global_batch / self.small_batch - 1
        if variance <= 0:
            return None  # the batch is already no larger than the one imitated
        z = 1 + variance**0.5 * torch.randn(global_batch, generator=_generator(self.seed, step))
        share = global_batch // world_size
        return z[rank * share : (rank + 1) * share]
