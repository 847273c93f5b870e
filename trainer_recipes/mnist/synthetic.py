"""A learnable toy problem written in MNIST's exact IDX format.

For tests and benchmarks on machines without the real files: the same loader, shapes and
dtypes, but each class is just a bright 7x7 block at its own place on a noisy canvas. Anything
trained on it says nothing about MNIST accuracy.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.data.idx import write_idx


def write_fake_mnist(folder: Path, n_train: int = 1200, n_test: int = 200, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=gen)
        images = torch.randint(0, 60, (n, 28, 28), generator=gen)
        rows, cols = labels // 4, labels % 4
        for i in range(n):
            r, c = int(rows[i]), int(cols[i])
            images[i, 2 + 7 * r : 9 + 7 * r, 2 + 6 * c : 9 + 6 * c] += 180
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images.clamp(0, 255))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder
