"""What the BatchNorm variants share: their base class and the swap into any model."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

BatchNorm = nn.modules.batchnorm._BatchNorm


class BatchNormVariant(BatchNorm):
    """A BatchNorm for inputs of any rank (N, C, ...) that differs only in training."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")

    def uses_running_stats(self) -> bool:
        return not self.training and self.track_running_stats

    def normalise_with_running_stats(self, x: torch.Tensor) -> torch.Tensor:
        """Exactly nn.BatchNorm in eval mode."""
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)


def swap_batchnorm(module: nn.Module, make: Callable[[BatchNorm], BatchNorm]) -> nn.Module:
    """Replace each BatchNorm ``bn`` in ``module`` (in place) by ``make(bn)``, which gets
    ``bn``'s parameters, running statistics, dtype, device and train/eval mode."""
    if isinstance(module, BatchNorm):
        new = make(module)
        if type(new) is type(module):
            return module
        like = next((t for t in module.state_dict().values() if t.is_floating_point()), None)
        if like is not None:
            new.to(device=like.device, dtype=like.dtype)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, swap_batchnorm(child, make))
    return module
