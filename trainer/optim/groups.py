"""Parameter groups: biases and normalisation parameters apart from the weight matrices."""

from __future__ import annotations

from torch import nn


def split_bias_and_norm(model: nn.Module) -> list[dict]:
    """Two groups: weights (adapted, decayed) and 1-D parameters (biases, norm scales/shifts)
    with ``weight_decay=0`` and ``adapt=False``.

    Layer-wise adaptation of a bias or a BatchNorm scale by its own tiny norm destabilises
    training, and decaying them towards zero only hurts (You et al. 2017, 2019; Goyal et al.).
    """
    weights, others = [], []
    for param in model.parameters():
        if param.requires_grad:
            (others if param.ndim <= 1 else weights).append(param)
    groups = [{"params": weights}]
    if others:
        groups.append({"params": others, "weight_decay": 0.0, "adapt": False})
    return groups
