"""Early stopping: end the run when an eval metric has stopped improving.

Configured by ``trainer.early_stop`` (the patience, in evaluations) with
``trainer.early_stop_metric`` / ``_mode`` / ``_min_delta``; the run adds this callback when the
patience is set. Its best value and count of evaluations without improvement are saved in every
checkpoint (as the run's progress), so a resumed run keeps counting.
"""

from __future__ import annotations

from trainer.callbacks import Callback
from trainer.errors import UserError


class EarlyStopping(Callback):
    """Stop after ``patience`` evaluations in which ``metric`` did not beat the best so far by
    more than ``min_delta`` (``mode``: max or min)."""

    def __init__(self, patience: int, metric: str = "eval/accuracy", mode: str = "max",
                 min_delta: float = 0.0) -> None:
        self.patience, self.metric, self.min_delta = patience, metric, min_delta
        self.maximise = mode == "max"

    def on_eval_end(self, run, metrics: dict[str, float]) -> None:
        p = run.progress  # best / bad_evals live in the progress: checkpoints of any age hold them
        value = metrics.get(self.metric)
        if value is None:
            raise UserError(
                f"trainer.early_stop_metric={self.metric} is not an eval metric; "
                f"use one of {', '.join(metrics)}"
            )
        d = self.min_delta
        better = p.best is None or (value > p.best + d if self.maximise else value < p.best - d)
        p.best, p.bad_evals = (value, 0) if better else (p.best, p.bad_evals + 1)
        if p.bad_evals >= self.patience:
            run.request_stop(
                f"early stop: {self.metric} has not improved for {p.bad_evals} evaluations "
                f"(best {p.best:.4f})"
            )
