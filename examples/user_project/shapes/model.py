"""A small CNN: two conv blocks and a linear head; and a CNN of two inputs (the image and the
shape's radius) that may also locate the shape (two outputs)."""

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, width: int = 8, num_classes: int = 2, in_channels: int = 1,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(2 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TwoInputCNN(nn.Module):
    """``forward(image, radius)``: the image's features and the radius feed the head; with
    ``locate=True`` it returns ``(logits, centre)``, the centre (y, x) / size of the shape."""

    def __init__(self, width: int = 8, num_classes: int = 2, locate: bool = False,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.locate = locate
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Dropout(dropout),
        )
        self.head = nn.Linear(2 * width + 1, num_classes)
        self.where = nn.Linear(2 * width + 1, 2) if locate else None

    def forward(self, image: torch.Tensor, radius: torch.Tensor):
        joined = torch.cat([self.features(image), radius], dim=1)
        logits = self.head(joined)
        return (logits, self.where(joined)) if self.locate else logits
