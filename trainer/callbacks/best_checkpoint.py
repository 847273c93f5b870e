"""``checkpoints/best.pt``: the weights of the best evaluation so far.

One of the default callbacks (trainer/conf/callbacks/best_checkpoint.yaml), judged by
``callbacks.best_checkpoint.monitor`` / ``mode`` on the validation split (an evaluation is best
when it is strictly better than every earlier one; a run without a validation split judges by
the training loss); early stopping watches the same metric unless told otherwise;
``callbacks.best_checkpoint=null`` turns it off. At the end of the run its weights are evaluated
on the test split, once: ``best_test_<name>`` in metrics.json beside the final model's
``test_<name>``. The
file is a whole checkpoint written atomically beside the step checkpoints, never pruned by
``trainer.keep_last`` nor pointed at by ``last.pt``; ``best.json`` beside it records the step,
the metric and its value, and so does ``metrics.json`` (``best_step``, ``best_value``...).
``trainer-predict``, ``trainer-generate`` and ``trainer-export`` given a run directory use it
(``--last``: the newest checkpoint instead).
"""

from __future__ import annotations

from typing import Any

from trainer.callbacks import Callback
from trainer.tasks import selection_metric, selection_names


class BestCheckpoint(Callback):
    def __init__(self, monitor: str = "val/accuracy", mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode={mode!r}: use max or min")
        self.metric, self.maximise = monitor, mode == "max"
        self._said = False
        # The evaluation best.pt holds (saved in every checkpoint: a resume compares with it),
        # and the metric its value is of.
        self.step: int | None = None
        self.value: float | None = None
        self.measured = self.metric

    def state_dict(self) -> dict:
        return {"step": self.step, "value": self.value, "metric": self.measured}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.value = state["step"], state["value"]
        # (A checkpoint from before validation splits: its best was the test split's.)
        self.measured = state.get("metric", "the test split")

    def on_fit_start(self, run) -> None:
        self.metric, self.maximise = selection_metric(
            run, "callbacks.best_checkpoint.monitor", self.metric, self.maximise)
        names = selection_names(run)  # said at the start, not at the first evaluation
        if names is not None and self.metric not in names:
            self._warn(run, names)
        if self.value is not None and self.measured != self.metric:
            run.logger.warning(
                f"best.pt starts over on {self.metric}: the checkpoint's best (step "
                f"{self.step}, {self.value:.4g}) was measured on {self.measured}; the next "
                "evaluation replaces it")
            self.step = self.value = None
        self.measured = self.metric

    def _warn(self, run, names) -> None:
        if not self._said:  # regression has no accuracy: say so once, train on
            run.logger.warning(
                f"no best checkpoint: callbacks.best_checkpoint.monitor={self.metric} is "
                f"not a validation metric of this task (it has {', '.join(names)})")
            self._said = True

    def on_eval_end(self, run, metrics: dict[str, float]) -> None:
        value = metrics.get(self.metric)
        if value is None:
            self._warn(run, metrics)
            return
        best = self.value
        if best is not None and not (value > best if self.maximise else value < best):
            return
        self.step, self.value = run.step, value  # before the save: best.pt holds it too
        run.checkpointer.save(run.step, share=run.backend.on_primary,
                              best={"metric": self.metric, "value": value})

    def on_fit_end(self, run, metrics: dict[str, Any]) -> None:
        if self.step is None:
            return
        path = run.checkpointer.directory / "best.pt"
        metrics.update({"best_metric": self.metric, "best_value": self.value,
                        "best_step": self.step, "best_checkpoint": str(path)})
        if not any(key.startswith("test_") for key in metrics):
            return  # (trainer.test=false: the test split is not read)
        if self.step == run.step:  # the final model is the best one
            tested = {k: v for k, v in metrics.items() if k.startswith("test_")}
        else:
            tested = test_weights(run, path)
        metrics.update({f"best_{key}": value for key, value in tested.items()})


def test_weights(run, path) -> dict[str, float]:
    """The test split's metrics (``test_<name>``) of the weights saved in ``path``, the run's
    own weights put back after. Rank 0 reads the file and the others get it by broadcast (as
    a resume does: no shared filesystem needed)."""
    from trainer.engine.evaluate import evaluate
    from trainer.io.checkpoint_read import read_checkpoint

    saved = run.backend.on_primary(lambda: read_checkpoint(path)["model"])
    model = run.model
    own = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        model.load_state_dict(saved)
        values = evaluate(run, "test")
    finally:
        model.load_state_dict(own)
    return {f"test_{name.split('/', 1)[1]}": value for name, value in values.items()}
