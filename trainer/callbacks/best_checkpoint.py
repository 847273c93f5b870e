"""``checkpoints/best.pt``: the weights of the best evaluation so far.

Judged by ``trainer.early_stop_metric`` / ``trainer.early_stop_mode`` whether or not early
stopping is on (an evaluation is best when it is strictly better than every earlier one). The
file is a whole checkpoint written atomically beside the step checkpoints, never pruned by
``trainer.keep_last`` nor pointed at by ``last.pt``; ``best.json`` beside it records the step,
the metric and its value, and so does ``metrics.json`` (``best_step``, ``best_value``...).
``trainer-predict``, ``trainer-generate`` and ``trainer-export`` given a run directory use it
(``--last``: the newest checkpoint instead).
"""

from __future__ import annotations

from typing import Any

from trainer.callbacks import Callback


class BestCheckpoint(Callback):
    def __init__(self, metric: str = "eval/accuracy", mode: str = "max") -> None:
        self.metric, self.maximise = metric, mode == "max"
        self._said = False

    def on_eval_end(self, run, metrics: dict[str, float]) -> None:
        value = metrics.get(self.metric)
        if value is None:
            if not self._said:  # regression has no accuracy: say so once, train on
                run.logger.warning(
                    f"no best checkpoint: trainer.early_stop_metric={self.metric} is not an "
                    f"eval metric of this task (it has {', '.join(metrics)})")
                self._said = True
            return
        p = run.progress
        best = p.best_checkpoint_value
        if best is not None and not (value > best if self.maximise else value < best):
            return
        p.best_checkpoint_step, p.best_checkpoint_value = p.step, value
        run.checkpointer.save(p.step, share=run.backend.on_primary,
                              best={"metric": self.metric, "value": value})

    def on_fit_end(self, run, metrics: dict[str, Any]) -> None:
        p = run.progress
        if p.best_checkpoint_step is None:
            return
        metrics.update({"best_metric": self.metric, "best_value": p.best_checkpoint_value,
                        "best_step": p.best_checkpoint_step,
                        "best_checkpoint": str(run.checkpointer.directory / "best.pt")})
