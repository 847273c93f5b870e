"""The gradient noise scale B_simple: measured from the step's gradients, reported in
TensorBoard, on the log line and in metrics.json.

Measured in two gradient hooks: each backward pass's own gradient norm (a tensor hook per
parameter, trainer.large_batch.noise_scale.MicroBatchNorms), and, once the gradient is averaged
(``on_after_backward``), the global batch's; the estimate (``run.noise_scale``, built where
``trainer.noise_scale`` asks for it) averages its per-worker norms in the loop's one
all-reduce of the logged losses (no collective of its own). Reported: ``noise_scale/grad_sq``,
``trace_sigma``, ``b_simple`` and ``b_simple_stderr`` (the last two once measurable: never a
negative "batch size"), and at the end the summary line and ``b_simple``,
``b_simple_stderr``, ``b_simple_note`` in metrics.json. ``callbacks.noise_scale=null`` turns
the measurement and the report off.
"""

from __future__ import annotations

from typing import Any

import torch

from trainer.callbacks import Callback
from trainer.large_batch.noise_scale import MicroBatchNorms, micro_batch_norms, not_measured_reason


class NoiseScaleCallback(Callback):
    def __init__(self) -> None:
        self.micro_norms: MicroBatchNorms | None = None

    def on_epoch_start(self, run) -> None:
        # (Again each epoch: a stage switch, before this, rebuilds the optimizer's groups of
        # trainable parameters. The hooks are AdaScale's too where it runs.)
        if run.noise_scale is None:
            return
        groups = [group["params"] for group in run.optimizer.param_groups]
        self.micro_norms = micro_batch_norms(run.model, groups)

    def on_after_backward(self, run) -> None:
        """This step's small- and large-batch squared gradient norms.

        Small: the mean over this worker's micro-batches of each one's own gradient (its loss
        carried a 1/k, hence the k^2); averaged over workers with the logged losses. Large:
        the averaged gradient of the whole global batch.
        """
        if self.micro_norms is None:
            return
        k = run.micro_batches_now
        scale_sq = run.precision.loss_scale() ** 2  # fp16 gradients still carry the loss scale
        small = torch.stack(self.micro_norms.take(run.step)).sum(dim=1).mean() * (k * k)
        big = self.micro_norms.averaged(run.step).sum()
        run.noise_scale.record(small / scale_sq, big / scale_sq, run.loader.batch_size // k,
                               run.loader.global_batch_size)

    def on_fit_end(self, run, metrics: dict[str, Any]) -> None:
        if self.micro_norms is not None:
            self.micro_norms.remove()
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
