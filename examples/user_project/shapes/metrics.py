"""A task with metrics of its own: classification plus precision, recall and F1 of one class.

The framework reduces sums, not means: ``counts`` returns this batch's correct predictions
and its true positives, false positives and false negatives; ``metrics`` turns the sums over
every batch of every worker into the values (logged as val/f1, train/epoch_f1, test_f1).
"""

import torch

from trainer.tasks import Classification


class F1Classification(Classification):
    extra_sums = ("true_pos", "false_pos", "false_neg")

    def __init__(self, positive: int = 1) -> None:
        self.positive = positive

    def counts(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        predicted = self.predict(logits) == self.positive
        actual = targets == self.positive
        return torch.stack([
            self.count_correct(logits, targets),
            (predicted & actual).sum(), (predicted & ~actual).sum(), (~predicted & actual).sum(),
        ])

    def metrics(self, loss_sum, correct, count, true_pos, false_pos, false_neg):
        values = super().metrics(loss_sum, correct, count)
        precision = true_pos / max(true_pos + false_pos, 1.0)
        recall = true_pos / max(true_pos + false_neg, 1.0)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        return {**values, "precision": precision, "recall": recall, "f1": f1}
