"""Digit image files as a user would photograph or scan them: enlarged, dark ink on a light,
tinted background with a margin, in colour (for trainer-predict)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_digit_photo(pixels: torch.Tensor, top: float, path: Path, scale: int = 12) -> Path:
    """Save ``pixels`` (a data set's raw digit, white ink on black, values 0..``top``) as an
    RGB PNG: ``scale`` times larger, inverted, tinted, with a margin."""
    ink = np.kron(pixels.numpy().astype(np.float64) / top, np.ones((scale, scale)))
    paper = 1.0 - np.pad(ink, 2 * scale)
    rgb = np.stack([0.1 + 0.9 * paper, 0.1 + 0.8 * paper, paper], axis=-1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return path
