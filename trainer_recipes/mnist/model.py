"""The MNIST recipe's model."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class MLP(nn.Sequential):
    """Flatten, then Linear(+BatchNorm)+ReLU(+Dropout) per hidden width, then class logits.

    The seed's MNIST model has no normalisation; ``norm="batch"`` adds BatchNorm after each
    hidden Linear, for the large-batch tools that act on BatchNorm (SyncBatchNorm, Ghost BN).
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (512, 512),
        num_classes: int = 10,
        dropout: float = 0.0,
        norm: str = "none",
    ) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if norm not in ("none", "batch"):
            raise ValueError(f"norm must be none or batch, got {norm!r}")
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden must list one or more layer widths >= 1, got {list(hidden)}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)

