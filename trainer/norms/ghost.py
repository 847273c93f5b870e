"""Ghost Batch Normalization (Hoffer, Hubara, Soudry 2017, "Train longer, generalize better").

In training, a batch of N samples is cut into N / G "ghost" batches of G samples and each is
normalised with its own mean and variance, which keeps the regularising noise of small-batch
BatchNorm when the batch grows. The running statistics move once per batch, by the average of
the ghost batches' statistics (unbiased variances), so they mean what nn.BatchNorm's mean. In
eval mode it is exactly nn.BatchNorm. In data-parallel runs it acts per worker.

``apply_ghost_batchnorm(model, G)`` swaps every BatchNorm1d/2d/3d of any model in place.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from trainer.errors import UserError
from trainer.norms.base import BatchNormVariant, swap_batchnorm


class GhostBatchNorm(BatchNormVariant):
    """BatchNorm whose training statistics come from ghost batches of ``ghost_batch_size``."""

    def __init__(self, num_features: int, ghost_batch_size: int, eps: float = 1e-5,
                 momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True) -> None:
        if ghost_batch_size < 2:
            raise ValueError(f"ghost_batch_size must be >= 2, got {ghost_batch_size}")
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.ghost_batch_size = ghost_batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if self.uses_running_stats():
            return self.normalise_with_running_stats(x)
        chunks = x.split(self.ghost_batch_size)
        outputs = [F.batch_norm(c, None, None, self.weight, self.bias, True, 0.0, self.eps)
                   for c in chunks]
        if self.track_running_stats:
            self._update_running_stats(chunks)
        return torch.cat(outputs)

    @torch.no_grad()
    def _update_running_stats(self, chunks: tuple[torch.Tensor, ...]) -> None:
        dims = [d for d in range(chunks[0].dim()) if d != 1]
        means = torch.stack([c.mean(dims) for c in chunks]).mean(0)
        variances = torch.stack([c.var(dims, unbiased=True) for c in chunks]).mean(0)
        self.num_batches_tracked += 1
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - m).add_(means, alpha=m)
        self.running_var.mul_(1 - m).add_(variances, alpha=m)


def apply_ghost_batchnorm(module: nn.Module, ghost_batch_size: int) -> nn.Module:
    """Replace every BatchNorm in ``module`` by a GhostBatchNorm with the same state."""
    return swap_batchnorm(module, lambda bn: GhostBatchNorm(
        bn.num_features, ghost_batch_size, bn.eps, bn.momentum, bn.affine,
        bn.track_running_stats,
    ))


def check_ghost_batches(cfg, micro_batch: int) -> None:
    """A ghost batch size that does not divide each forward's batch is refused at start: the
    last ghost batch would be smaller (down to one sample, which BatchNorm cannot normalise)
    yet weigh like the full ones in the running statistics."""
    ghost = cfg.model.ghost_batch_size
    if ghost and micro_batch % ghost:
        raise UserError(
            f"model.ghost_batch_size={ghost} does not divide the per-worker micro-batch of "
            f"{micro_batch} samples into equal ghost batches; choose a ghost batch size that "
            f"divides {micro_batch} (or change data.batch_size / trainer.accumulate)"
        )
