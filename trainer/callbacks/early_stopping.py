"""Early stopping: end the run when a validation metric has stopped improving.

Switched on by choosing it among the callbacks (``callbacks=[default,early_stopping]``, a
recipe's ``override /callbacks: [default, early_stopping]``; trainer/conf/callbacks/
early_stopping.yaml), with ``callbacks.early_stopping.patience`` (in evaluations),
``monitor`` and ``mode`` (by default the best checkpoint's: ``val/accuracy``) and ``min_delta``.
A run without a validation split (``data.val_fraction=0``) watches the training loss instead.
Its best value and count of evaluations without improvement are its own state, saved in every
checkpoint (under ``callbacks.early_stopping``) with the metric they were measured on, so a
resumed run keeps counting (and starts over, saying so, where the metric changed).
"""

from __future__ import annotations

from trainer.callbacks import Callback
from trainer.errors import UserError
from trainer.tasks import selection_metric, selection_names


class EarlyStopping(Callback):
    """Stop after ``patience`` evaluations in which ``monitor`` did not beat the best so far
    by more than ``min_delta`` (``mode``: max or min)."""

    def __init__(self, patience: int = 3, monitor: str = "val/accuracy", mode: str = "max",
                 min_delta: float = 0.0) -> None:
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
            raise ValueError(f"patience={patience!r}: use a number of evaluations >= 1")
        if mode not in ("max", "min"):
            raise ValueError(f"mode={mode!r}: use max or min")
        if not min_delta >= 0:
            raise ValueError(f"min_delta={min_delta!r}: use a value >= 0")
        self.patience, self.metric, self.min_delta = patience, monitor, min_delta
        self.maximise = mode == "max"
        self.best: float | None = None  # the best value so far
        self.bad_evals = 0  # evaluations since it last improved
        self.measured = self.metric  # what ``best`` was measured on

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_evals": self.bad_evals, "metric": self.measured}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_evals = state["best"], state["bad_evals"]
        # (A checkpoint from before validation splits: its best was the test split's.)
        self.measured = state.get("metric", "the test split")

    def on_fit_start(self, run) -> None:
        # Before the first step, not after an epoch of training.
        self.metric, self.maximise = selection_metric(
            run, "callbacks.early_stopping.monitor", self.metric, self.maximise)
        names = selection_names(run)
        if names is not None and self.metric not in names:
            self._refuse(names)
        if self.best is not None and self.measured != self.metric:
            run.logger.warning(f"early stopping starts over on {self.metric}: the checkpoint's "
                               f"best ({self.best:.4g}) was measured on {self.measured}")
            self.best, self.bad_evals = None, 0
        self.measured = self.metric

    def _refuse(self, names) -> None:
        raise UserError(f"callbacks.early_stopping.monitor={self.metric} is not a validation "
                        f"metric of this task; use one of {', '.join(names)}")

    def on_eval_end(self, run, metrics: dict[str, float]) -> None:
        value = metrics.get(self.metric)
        if value is None:
            self._refuse(metrics)
        d, best = self.min_delta, self.best
        better = best is None or (value > best + d if self.maximise else value < best - d)
        self.best, self.bad_evals = (value, 0) if better else (best, self.bad_evals + 1)
        if self.bad_evals >= self.patience:
            run.request_stop(
                f"early stop: {self.metric} has not improved for {self.bad_evals} evaluations "
                f"(best {self.best:.4f})"
            )
