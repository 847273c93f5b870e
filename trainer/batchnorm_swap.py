"""Swap every BatchNorm layer of a model for another kind, keeping its state."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

BatchNorm = nn.modules.batchnorm._BatchNorm


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
