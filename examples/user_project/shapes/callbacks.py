"""A callback: remember the best eval accuracy and write it to best.json at the end."""

import json

import torch

import trainer


class BestAccuracy(trainer.Callback):
    def __init__(self, metric: str = "val/accuracy", filename: str = "best.json") -> None:
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


class ClipGradNorm(trainer.Callback):
    """A clipping rule of the project's own, as a gradient hook: rescale the gradient so its
    global L2 norm is at most ``max_norm``. The hook sees the gradient averaged over workers
    and unscaled, right before the optimizer steps; every worker holds the same one, so every
    worker clips alike. (The built-in ``trainer.clip_grad_norm`` does the same; this shows
    where a rule of your own goes, e.g. adaptive or per-layer clipping.)"""

    def __init__(self, max_norm: float = 1.0) -> None:
        self.max_norm = max_norm
        self.steps = 0

    def on_before_optimizer_step(self, run, optimizer):
        params = [p for p in run.model.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        self.steps += 1
