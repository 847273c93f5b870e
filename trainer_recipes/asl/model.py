"""The seed's ASL CNN (NVIDIA DLI "Fundamentals of Deep Learning", sign-language MNIST)."""

from __future__ import annotations

import torch
from torch import nn


class ASLCNN(nn.Module):
    """Conv 75 -> 50 -> 25 (3x3, same padding, ReLU), each followed by BatchNorm and a 2x2
    max-pool of stride 2 (Keras 'same' pooling: 28 -> 14 -> 7 -> 4), dropout 0.2 after the
    second convolution, then Dense 512 + dropout 0.3 and the class logits."""

    def __init__(self, in_channels: int = 1, num_classes: int = 24, image_size: int = 28) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, dropout: float = 0.0) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            return layers + [nn.BatchNorm2d(c_out), nn.MaxPool2d(2, 2, ceil_mode=True)]

        self.features = nn.Sequential(
            *block(in_channels, 75), *block(75, 50, dropout=0.2), *block(50, 25)
        )
        side = image_size
        for _ in range(3):
            side = (side + 1) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(25 * side * side, 512), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # N x H x W grayscale batches from the in-memory path
            x = x.unsqueeze(1)
        return self.classifier(self.features(x))
