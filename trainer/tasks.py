"""What a model's output means: the loss to train on and the counts behind each metric.

Metrics are kept as sums and counts, never as per-batch means, so they can be summed over
batches and over workers and divided once (a mean of means is wrong for unequal shards).
Every shipped task reduces to three numbers: the summed loss, the number of correct
predictions, and the number of samples.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from trainer.errors import UserError


class Classification:
    """Cross-entropy over class logits; accuracy is the share of argmax hits."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy; with ``weights``, the mean of the weighted per-sample losses."""
        if weights is None:
            return F.cross_entropy(logits, targets)
        per_sample = F.cross_entropy(logits, targets, reduction="none")
        return (per_sample * weights.to(per_sample.device, per_sample.dtype)).mean()

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)

    def count_correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Number of right predictions in the batch, as a tensor on the batch's device."""
        return (self.predict(logits) == targets).sum()

    def metrics(self, loss_sum: float, correct: float, count: float) -> dict[str, float]:
        count = max(count, 1.0)
        return {"loss": loss_sum / count, "accuracy": correct / count}


class Binary(Classification):
    """Two classes from one logit per sample: binary cross-entropy on the logit (numerically
    stable, no sigmoid layer in the model); a prediction is class 1 where the logit is > 0."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        if logits.numel() != targets.numel():
            raise UserError(
                f"task=binary takes one logit per sample, the model gives {logits.shape[-1]}; "
                "use task=classification for more than two classes"
            )
        logits = logits.reshape(targets.shape)
        per_sample = F.binary_cross_entropy_with_logits(
            logits, targets.to(logits.dtype), reduction="none"
        )
        if weights is not None:
            per_sample = per_sample * weights.to(per_sample.device, per_sample.dtype)
        return per_sample.mean()

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.reshape(len(logits)) > 0).long()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-class probabilities (N x 2), as a softmax gives for Classification."""
        p = torch.sigmoid(logits.reshape(len(logits)).float())
        return torch.stack([1 - p, p], dim=1)


class NextToken(Classification):
    """Language modelling: cross-entropy over the vocabulary, plus perplexity = exp(loss)."""

    def metrics(self, loss_sum: float, correct: float, count: float) -> dict[str, float]:
        values = super().metrics(loss_sum, correct, count)
        return {**values, "perplexity": math.exp(min(values["loss"], 700.0))}


class Regression:
    """Mean squared error on one output per sample; the only metric is the MSE itself."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        per_sample = (outputs.reshape(targets.shape) - targets).square()
        if weights is not None:
            per_sample = per_sample * weights.to(per_sample.device, per_sample.dtype)
        return per_sample.mean()

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.squeeze(-1)

    def count_correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """No notion of a correct prediction: always 0 (the count keeps the sums' shape)."""
        return torch.zeros((), dtype=torch.long, device=outputs.device)

    def metrics(self, loss_sum: float, correct: float, count: float) -> dict[str, float]:
        return {"loss": loss_sum / max(count, 1.0)}
