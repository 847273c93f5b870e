"""Draw test images with captions of predicted vs true class, for TensorBoard."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

_TILE = 64
_CAPTION = 14


def draw_prediction_grid(
    images: torch.Tensor, predicted: list[str], actual: list[str], columns: int = 8
) -> torch.Tensor:
    """N x C x H x W images in [0, 1] -> one 3 x H' x W' float image; wrong guesses in red."""
    n = len(images)
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    canvas = Image.new("RGB", (columns * _TILE, rows * (_TILE + _CAPTION)), "white")
    draw = ImageDraw.Draw(canvas)
    pixels = (images.detach().float().clamp(0, 1).cpu() * 255).to(torch.uint8)
    for i in range(n):
        tile = pixels[i]
        mode = "L" if tile.shape[0] == 1 else "RGB"
        array = tile[0].numpy() if mode == "L" else tile.permute(1, 2, 0).numpy()
        picture = Image.fromarray(np.ascontiguousarray(array), mode).convert("RGB")
        picture = picture.resize((_TILE, _TILE), Image.NEAREST)
        x, y = (i % columns) * _TILE, (i // columns) * (_TILE + _CAPTION)
        canvas.paste(picture, (x, y))
        colour = (0, 0, 0) if predicted[i] == actual[i] else (220, 0, 0)
        draw.text((x + 2, y + _TILE), f"{predicted[i]} ({actual[i]})", fill=colour)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255.0
