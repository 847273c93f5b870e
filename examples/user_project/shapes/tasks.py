"""A task that owns the whole forward-and-loss of a batch (Lightning's ``training_step``): it
feeds a dict batch to a model of two inputs and trains both of the model's outputs, the class
(cross-entropy) and the shape's centre (squared error), as one loss.

The framework still does everything around it: micro-batches (``trainer.accumulate``), the
gradient averaging over workers, clipping, precision, checkpoints; it cuts, moves and casts
the dict like any batch. ``counts`` and ``metrics`` work on the same outputs and targets, so
the centre's error is reduced over every batch and worker like the accuracy (``val/center_mse``).
"""

import torch
from torch.nn import functional as F

from trainer.tasks import Classification


class ClassifyAndLocate(Classification):
    extra_sums = ("center_sq_error",)

    def __init__(self, center_weight: float = 1.0) -> None:
        self.center_weight = center_weight

    def forward(self, model, batch: dict):
        logits, centre = model(batch["image"], batch["radius"])
        return (logits, centre), {"label": batch["label"], "center": batch["center"]}

    def loss(self, outputs, targets, weights=None):
        logits, centre = outputs
        per_sample = (F.cross_entropy(logits, targets["label"], reduction="none")
                      + self.center_weight * (centre - targets["center"]).square().sum(1))
        if weights is not None:
            per_sample = per_sample * weights.to(per_sample.device, per_sample.dtype)
        return per_sample.mean()

    def predict(self, outputs):
        return outputs[0].argmax(dim=1)

    def counts(self, outputs, targets):
        correct = (self.predict(outputs) == targets["label"]).sum()
        error = (outputs[1] - targets["center"]).square().sum()
        return torch.stack([correct.to(error.dtype), error])

    def metrics(self, loss_sum, correct, count, center_sq_error):
        return {**super().metrics(loss_sum, correct, count),
                "center_mse": center_sq_error / max(count, 1.0)}
