"""Synchronised BatchNorm that also works on the CPU (torch's and Horovod's are GPU-only).

In training every worker normalises with the statistics of the GLOBAL batch: per channel it
computes the local sum, sum of squares and count, one all-reduce adds them over workers, and

    mean = S1 / n,   var = S2 / n - mean^2            (biased, used to normalise)
    y = (x - mean) / sqrt(var + eps) * weight + bias
    running_var <- (1 - m) running_var + m var n / (n - 1)   (unbiased, as nn.BatchNorm)

The backward pass needs two more global sums per channel, sum(dy) and sum(dy * xhat):

    dx = weight / sqrt(var + eps) * (dy - sum(dy) / n - xhat * sum(dy * xhat) / n)

with the sums over all workers; weight and bias gradients stay local (DDP/Horovod average them).
Sums are taken in float64 so that S2 / n - mean^2 does not cancel away.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trainer.norms.base import BatchNormVariant, swap_batchnorm

AllReduce = Callable[[torch.Tensor], torch.Tensor]


class _SyncBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, all_reduce):
        channels = x.shape[1]
        dims = [d for d in range(x.dim()) if d != 1]
        x64 = x.double()
        local = torch.cat([
            x64.sum(dims), (x64 * x64).sum(dims),
            x64.new_tensor([x.numel() // channels]),
        ])
        total = all_reduce(local)
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels : 2 * channels] / n - mean * mean).clamp_min(0)
        invstd = torch.rsqrt(var + eps)
        shape = [1, channels] + [1] * (x.dim() - 2)
        xhat = (x64 - mean.view(shape)) * invstd.view(shape)
        y = xhat * weight.double().view(shape) + bias.double().view(shape)
        ctx.save_for_backward(xhat, weight, invstd)
        mean, var = mean.to(x.dtype), var.to(x.dtype)
        ctx.mark_non_differentiable(mean, var, n)
        ctx.n, ctx.dims, ctx.shape, ctx.all_reduce = n, dims, shape, all_reduce
        return y.to(x.dtype), mean, var, n

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar, _dn):
        xhat, weight, invstd = ctx.saved_tensors
        dy64 = dy.double()
        local_dy = dy64.sum(ctx.dims)
        local_dy_xhat = (dy64 * xhat).sum(ctx.dims)
        sums = ctx.all_reduce(torch.cat([local_dy, local_dy_xhat]))
        channels = local_dy.numel()
        mean_dy = (sums[:channels] / ctx.n).view(ctx.shape)
        mean_dy_xhat = (sums[channels:] / ctx.n).view(ctx.shape)
        scale = (weight.double() * invstd).view(ctx.shape)
        dx = scale * (dy64 - mean_dy - xhat * mean_dy_xhat)
        return (
            dx.to(dy.dtype), local_dy_xhat.to(weight.dtype), local_dy.to(weight.dtype),
            None, None,
        )


class SyncBatchNorm(BatchNormVariant):
    """BatchNorm over the global batch; ``all_reduce`` sums a tensor over workers in place."""

    def __init__(self, num_features: int, all_reduce: AllReduce, eps: float = 1e-5,
                 momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.all_reduce = all_reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if self.uses_running_stats():
            return self.normalise_with_running_stats(x)
        weight = self.weight if self.affine else torch.ones(x.shape[1], device=x.device)
        bias = self.bias if self.affine else torch.zeros(x.shape[1], device=x.device)
        y, mean, var, n = _SyncBatchNormFunction.apply(x, weight, bias, self.eps,
                                                       self.all_reduce)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(
                    self.num_batches_tracked
                )
                unbiased = var * (n / (n - 1)).to(var.dtype)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        return y


def convert_sync_batchnorm(module: nn.Module, all_reduce: AllReduce) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d in ``module`` by a SyncBatchNorm with the same state."""
    return swap_batchnorm(module, lambda bn: SyncBatchNorm(
        bn.num_features, all_reduce, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
    ))
