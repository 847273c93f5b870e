"""The MNIST recipe's model."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class MLP(nn.Sequential):
    """Flatten, then Linear+ReLU(+Dropout) per hidden width, then a Linear to class logits."""

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (512, 512),
        num_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)

