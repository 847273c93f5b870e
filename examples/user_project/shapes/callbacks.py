"""A callback: remember the best eval accuracy and write it to best.json at the end."""

import json

import trainer


class BestAccuracy(trainer.Callback):
    def __init__(self, metric: str = "eval/accuracy", filename: str = "best.json") -> None:
        self.metric, self.filename = metric, filename
        self.best: float | None = None
        self.best_step: int | None = None

    def on_eval_end(self, run, metrics):
        value = metrics.get(self.metric)
        if value is not None and (self.best is None or value > self.best):
            self.best, self.best_step = value, run.step

    def on_fit_end(self, run, metrics):
        if run.is_primary:  # every rank has the same numbers; one writes the file
            (run.run_dir / self.filename).write_text(
                json.dumps({"metric": self.metric, "best": self.best, "step": self.best_step}))

    # Kept across a resume: saved in every checkpoint under this callback's name.
    def state_dict(self):
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state):
        self.best, self.best_step = state["best"], state["best_step"]
