"""Synthetic linear data: y = w . x + b + N(0, noise_std^2), drawn from a seed."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainer.data import InMemoryData, TensorSplit


class LinearData(InMemoryData):
    """x ~ N(0, I) in ``len(weights)`` dimensions; targets from the true weights plus noise.

    Args:
        weights: the true w (its length is the number of features).
        bias: the true b.
        noise_std: standard deviation of the Gaussian noise on y (> 0 makes SGD noisy).
        num_train, num_test: samples per split.
        num_val: samples of a validation split drawn after them (the same law, so the
            training rows stay whole: the batch-size study trains up to batch 8192 on 8192
            rows); 0: none of its own (``data.val_fraction`` of the training rows then).
        seed: the draw; the same seed gives the same data on every rank.
    """

    class_names: list[str] = []

    def __init__(self, root: str = "synthetic", weights: Sequence[float] = (2.0,),
                 bias: float = 1.0, noise_std: float = 1.0, num_train: int = 8192,
                 num_test: int = 2048, seed: int = 0, num_val: int = 2048) -> None:
        if not weights:
            raise ValueError("data.weights needs at least one true weight")
        if noise_std < 0 or num_train < 1 or num_test < 1 or num_val < 0:
            raise ValueError("data.noise_std must be >= 0, num_train and num_test >= 1, "
                             "num_val >= 0")
        self.true_weights = torch.tensor(list(weights), dtype=torch.float32)
        self.true_bias = float(bias)
        self.noise_std = float(noise_std)
        generator = torch.Generator().manual_seed(seed)
        self.train = self._split(num_train, generator)
        self.test = self._split(num_test, generator)
        self.val = self._split(num_val, generator) if num_val else None
        self.description = (
            f"SYNTHETIC: y = w.x + b + N(0, {noise_std}^2), w={list(weights)}, b={bias}; "
            f"{num_train} train / {num_val} validation / {num_test} test samples (seed {seed})"
        )

    def _split(self, n: int, generator: torch.Generator) -> TensorSplit:
        x = torch.randn(n, len(self.true_weights), generator=generator)
        noise = self.noise_std * torch.randn(n, generator=generator)
        return TensorSplit(x, x @ self.true_weights + self.true_bias + noise)
