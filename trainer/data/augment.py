"""Random affine augmentation of whole batches on the training device.

One ``affine_grid`` + ``grid_sample`` per batch instead of a PIL call per image: rotation,
zoom, width/height shift and horizontal flip, with Keras' ImageDataGenerator meanings
(``rotation`` in degrees, ``zoom``/``shift`` as fractions; edges filled with the nearest pixel).

Reproducible across world sizes: the loader hands over a generator seeded by (seed, epoch,
batch) and this rank's offset in the global batch; parameters are drawn for the whole global
batch and each rank takes its rows, so a sample gets the same transform whichever worker holds
it, and a resumed run draws the same numbers again.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


class RandomAffine:
    """Per-sample random rotation, zoom, shift and horizontal flip.

    Args:
        rotation: maximum rotation in degrees (uniform in [-rotation, rotation]).
        zoom: zoom factor drawn uniformly from [1 - zoom, 1 + zoom].
        shift: maximum shift as a fraction of width (x) and of height (y).
        hflip: flip left-right with probability 1/2.
    """

    def __init__(self, rotation: float = 10.0, zoom: float = 0.1, shift: float = 0.1,
                 hflip: bool = True) -> None:
        if rotation < 0 or not 0 <= zoom < 1 or not 0 <= shift < 1:
            raise ValueError(
                f"rotation={rotation} must be >= 0, zoom={zoom} and shift={shift} in [0, 1)"
            )
        self.rotation, self.zoom, self.shift, self.hflip = rotation, zoom, shift, hflip

    def __call__(self, images: torch.Tensor, generator: torch.Generator, offset: int = 0,
                 total: int | None = None) -> torch.Tensor:
        """Augment ``images`` (N x H x W or N x C x H x W, float), rows ``offset...`` of a
        global batch of ``total``."""
        squeeze = images.dim() == 3
        x = images.unsqueeze(1) if squeeze else images
        n = x.shape[0]
        total = n if total is None else total
        u = torch.rand(total, 5, generator=generator, dtype=torch.float64)[offset : offset + n]
        u = (2 * u - 1).to(x.device)  # uniform in [-1, 1]
        angle = u[:, 0] * math.radians(self.rotation)
        scale = 1 + u[:, 1] * self.zoom
        flip = torch.where(u[:, 4] < 0, -1.0, 1.0) if self.hflip else torch.ones_like(angle)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # theta maps output coordinates to input coordinates, both in [-1, 1]; a shift of a
        # fraction f of the width is 2f in those units.
        theta = torch.stack([
            torch.stack([cos * flip, -sin, u[:, 2] * 2 * self.shift], dim=1),
            torch.stack([sin * flip, cos, u[:, 3] * 2 * self.shift], dim=1),
        ], dim=1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
        return out.squeeze(1) if squeeze else out
