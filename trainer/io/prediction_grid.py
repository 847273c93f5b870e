"""Draw test images with captions of predicted vs true class, for TensorBoard."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# Big enough to read in TensorBoard's image card at its default size: an 8x8 digit becomes
# 12 x 12 screen pixels per input pixel, and the caption a 16-pixel font.
_TILE = 96
_CAPTION = 20
_FONT_SIZE = 16


def draw_prediction_grid(
    images: torch.Tensor, predicted: list[str], actual: list[str], columns: int = 8
) -> torch.Tensor:
    """N x C x H x W images in [0, 1] -> one 3 x H' x W' float image; wrong guesses in red."""
    n = len(images)
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    canvas = Image.new("RGB", (columns * _TILE, rows * (_TILE + _CAPTION)), "white")
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=_FONT_SIZE)
    except TypeError:  # Pillow < 10.1: the small bitmap font only
        font = ImageFont.load_default()
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
        draw.text((x + 3, y + _TILE + 1), f"{predicted[i]} ({actual[i]})", fill=colour,
                  font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255.0
