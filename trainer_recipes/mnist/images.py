"""Any photo or scan of one digit, as the digit data sets draw theirs (for trainer-predict).

MNIST's digits are white on black, their bounding box scaled to fit 20 x 20 pixels and placed
in a 28 x 28 frame by their centre of mass (LeCun et al.); scikit-learn's 8 x 8 digits fill
their frame. A file of any size and colour is turned grey, inverted when it is dark ink on a
light background (its border is brighter than its middle), cropped to the ink, scaled so the
longer side fits the box, and centred the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def digit_image(path: Path, frame: int, box: int) -> np.ndarray:
    """The digit in ``path`` as a ``frame`` x ``frame`` float array in [0, 1], white ink on
    black, its ink scaled to fit ``box`` x ``box`` and centred by its centre of mass."""
    from PIL import Image

    with Image.open(path) as image:
        grey = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if border.mean() > grey.mean():  # dark ink on paper
        grey = 1.0 - grey
    grey = np.clip(grey - np.median(border if border.mean() < 0.5 else 1.0 - border), 0, None)
    if grey.max() <= 0:
        return np.zeros((frame, frame))
    grey /= grey.max()
    rows, cols = np.nonzero(grey > 0.2)
    ink = grey[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = box / max(ink.shape)
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    ink = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(
        size, Image.LANCZOS), dtype=np.float64) / 255.0
    out = np.zeros((frame, frame))
    total = ink.sum()
    ys, xs = np.indices(ink.shape)
    centre = ((ys * ink).sum() / total, (xs * ink).sum() / total) if total else (0, 0)
    top = int(round(frame / 2 - centre[0]))
    left = int(round(frame / 2 - centre[1]))
    top = min(max(top, 0), frame - ink.shape[0])
    left = min(max(left, 0), frame - ink.shape[1])
    out[top:top + ink.shape[0], left:left + ink.shape[1]] = ink
    return out
