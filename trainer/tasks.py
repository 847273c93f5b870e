"""What a model's output means: the loss to train on and the counts behind each metric.

Metrics are returned as sums and counts, never as per-batch means, so that they can be summed
over batches and over workers and divided once (a mean of means is wrong for unequal shards).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


class Classification:
    """Cross-entropy over class logits; accuracy is the share of argmax hits."""

    metric_names = ("loss", "accuracy")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=1)

    def metric_sums(
        self, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> torch.Tensor:
        """[sum of loss, number correct, number of samples] for one batch, on its device."""
        n = targets.new_tensor(len(targets), dtype=torch.float64)
        correct = (self.predict(logits) == targets).sum(dtype=torch.float64)
        return torch.stack([loss.detach().double() * n, correct, n])

    def metrics_from_sums(self, sums: torch.Tensor) -> dict[str, float]:
        loss_sum, correct, count = sums.tolist()
        count = max(count, 1.0)
        return {"loss": loss_sum / count, "accuracy": correct / count}
