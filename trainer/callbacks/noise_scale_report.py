"""The gradient noise scale B_simple in TensorBoard, on the log line and in metrics.json.

The estimate itself is measured in the step (each micro-batch's gradient norm) and reduced in
the loop's one all-reduce of the logged losses (no collective of its own); this callback only
reports it: ``noise_scale/grad_sq``, ``trace_sigma``, ``b_simple`` and ``b_simple_stderr``
(the last two once measurable: never a negative "batch size"), and at the end the summary
line and ``b_simple``, ``b_simple_stderr``, ``b_simple_note`` in metrics.json.
"""

from __future__ import annotations

from typing import Any

from trainer.callbacks import Callback
from trainer.large_batch.noise_scale import not_measured_reason


class NoiseScaleReport(Callback):
    def on_log(self, run, metrics: dict[str, float]) -> None:
        noise_scale, step = run.noise_scale, run.progress.step
        if noise_scale is None or not noise_scale.steps:
            return
        w = noise_scale.weight  # the EMAs' bias correction
        run.logger.scalars({"noise_scale/grad_sq": noise_scale.grad_sq / w,
                            "noise_scale/trace_sigma": noise_scale.trace / w}, step)
        b_simple = noise_scale.value
        if b_simple is not None:
            run.logger.scalars({"noise_scale/b_simple": b_simple,
                                "noise_scale/b_simple_stderr": noise_scale.stderr}, step)
            run.logger.note(f"B_simple {b_simple:,.0f} ± {noise_scale.stderr:,.0f}")

    def on_fit_end(self, run, metrics: dict[str, Any]) -> None:
        noise_scale = run.noise_scale
        b_simple = noise_scale.value if noise_scale is not None else None
        if noise_scale is not None:
            run.logger.info(noise_scale.describe(run.loader.global_batch_size))
        metrics.update({
            "b_simple": b_simple,
            "b_simple_stderr": noise_scale.stderr if noise_scale is not None else None,
            # How many steps the estimate averages (the report flags short ones).
            "b_simple_steps": noise_scale.steps if noise_scale is not None else None,
            # Why b_simple is null: not measured, or not measurable (and what would fix it).
            "b_simple_note": (not_measured_reason(run.cfg.trainer) if noise_scale is None
                              else None if b_simple is not None
                              else noise_scale.not_measurable_reason()),
        })
