"""``checkpoints/best.pt``: the weights of the best evaluation so far.

One of the default callbacks (trainer/conf/callbacks/best_checkpoint.yaml), judged by
``callbacks.best_checkpoint.monitor`` / ``mode`` (an evaluation is best when it is strictly
better than every earlier one); early stopping watches the same metric unless told otherwise;
``callbacks.best_checkpoint=null`` turns it off. The
file is a whole checkpoint written atomically beside the step checkpoints, never pruned by
``trainer.keep_last`` nor pointed at by ``last.pt``; ``best.json`` beside it records the step,
the metric and its value, and so does ``metrics.json`` (``best_step``, ``best_value``...).
``trainer-predict``, ``trainer-generate`` and ``trainer-export`` given a run directory use it
(``--last``: the newest checkpoint instead).
"""

from __future__ import annotations

from typing import Any

from trainer.callbacks import Callback
from trainer.tasks import eval_metric_names


class BestCheckpoint(Callback):
    def __init__(self, monitor: str = "eval/accuracy", mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode={mode!r}: use max or min")
        self.metric, self.maximise = monitor, mode == "max"
        self._said = False
        # The evaluation best.pt holds (saved in every checkpoint: a resume compares with it).
        self.step: int | None = None
        self.value: float | None = None

    def state_dict(self) -> dict:
        return {"step": self.step, "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.value = state["step"], state["value"]

    def on_fit_start(self, run) -> None:
        names = eval_metric_names(run.task)  # said at the start, not at the first evaluation
        if names is not None and self.metric not in names:
            self._warn(run, names)

    def _warn(self, run, names) -> None:
        if not self._said:  # regression has no accuracy: say so once, train on
            run.logger.warning(
                f"no best checkpoint: callbacks.best_checkpoint.monitor={self.metric} is "
                f"not an eval metric of this task (it has {', '.join(names)})")
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
        metrics.update({"best_metric": self.metric, "best_value": self.value,
                        "best_step": self.step,
                        "best_checkpoint": str(run.checkpointer.directory / "best.pt")})
