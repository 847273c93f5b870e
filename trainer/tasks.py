"""What a model's output means: the loss to train on and the sums behind each metric.

Metrics are kept as sums, never as per-batch means, so they can be summed over batches and
over workers and divided once (a mean of means is wrong for unequal shards). Every task has
three: the summed loss, the number of correct predictions and the number of samples. A task
may add its own, named in ``extra_sums`` and returned by ``counts`` after the correct count
(true positives for an F1, top-5 hits): the framework sums them over batches and workers like
the others and hands them to ``metrics`` by name, whose every entry is logged to TensorBoard
(``train/epoch_<name>``, ``eval/<name>``) and to metrics.json (``test_<name>``).

The protocol (a task need not subclass anything):

- ``loss(outputs, targets, weights=None)``: the scalar to train on (weights: per-sample).
- ``predict(outputs)``: predicted labels (sample images, trainer-predict, the int8 report).
- ``counts(outputs, targets)``: 1-D tensor ``[correct, *extra_sums]`` for one batch, on the
  batch's device (no host sync); default ``count_correct`` alone.
- ``metrics(loss_sum, correct, count, **extra)``: the metric values from the summed counts.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from trainer.errors import UserError


class Classification:
    """Cross-entropy over class logits; accuracy is the share of argmax hits."""

    # Names of the sums ``counts`` returns after the correct count (none here).
    extra_sums: tuple[str, ...] = ()

    def counts(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``[correct, *extra_sums]`` of one batch."""
        return self.count_correct(logits, targets).reshape(1)

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

    extra_sums: tuple[str, ...] = ()

    def counts(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.count_correct(outputs, targets).reshape(1)

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


def sum_width(task) -> int:
    """How many sums a batch of this task adds up: loss, correct, count, then its extras."""
    return 3 + len(getattr(task, "extra_sums", ()))


def batch_counts(task, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[correct, *extra_sums]`` for one batch (a task without ``counts``: its correct count),
    checked against the task's declared width."""
    counts = (task.counts(outputs, targets) if hasattr(task, "counts")
              else task.count_correct(outputs, targets).reshape(1))
    width = sum_width(task) - 2
    if counts.shape != (width,):
        raise UserError(
            f"{type(task).__name__}.counts returned shape {tuple(counts.shape)}; it must return "
            f"[correct, {', '.join(getattr(task, 'extra_sums', ())) or '(no extra sums)'}], "
            f"{width} value(s), one per name in extra_sums after the correct count"
        )
    return counts


def task_metrics(task, sums) -> dict[str, float]:
    """The task's metrics from its summed values ``[loss_sum, correct, count, *extras]``."""
    loss_sum, correct, count, *extra = (float(v) for v in sums)
    names = getattr(task, "extra_sums", ())
    return task.metrics(loss_sum, correct, count, **dict(zip(names, extra, strict=True)))
