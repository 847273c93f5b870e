"""The gradient norm before clipping (``train/grad_norm``) and the fraction of steps that were
clipped (``train/grad_clipped``), at every log line, when gradient clipping is on."""

from __future__ import annotations

from trainer.callbacks import Callback


class GradNormReport(Callback):
    def on_log(self, run, metrics: dict[str, float]) -> None:
        taken = run.clip.take() if run.clip is not None else None
        if taken is None:
            return
        norm, clipped = taken
        run.logger.scalars({"train/grad_norm": norm, "train/grad_clipped": clipped}, run.step)
        run.logger.note(f"grad norm {norm:.3g}" + (f" ({clipped:.0%} clipped)"
                                                   if run.clip.max_norm else ""))
