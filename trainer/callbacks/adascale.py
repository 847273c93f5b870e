"""AdaScale (``optimizer.scale_lr=adascale``): each step's learning rate is the schedule's at
the run's scale-invariant progress times the gain measured from this step's gradients, and the
run ends when that progress reaches ``trainer.epochs`` base-batch epochs
(trainer/large_batch/adascale.py has the rule and its estimator).

Measured in two gradient hooks, like B_simple (the same tensor hooks where both run): each
backward pass's own gradient norm per optimizer group (tensor hooks, before any all-reduce),
and in ``on_after_backward`` the averaged gradient's; the workers' micro-batch norms are
averaged in one all-reduce per step and read back, since this step's learning rate depends on
them. Logged: ``adascale/gain`` (the mean over the steps since the last log line),
``adascale/progress`` (scale-invariant epochs) and the scaled ``lr`` the loop already logs;
the log line's note; ``adascale_*`` in metrics.json. Its state (progress, statistics) is in
every checkpoint, so a resume continues exactly. Evaluations and checkpoints follow the
progress too (``run.cadence``: trainer/engine/cadence.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from trainer.callbacks import Callback
from trainer.config.batch_size import is_auto, largest_batch
from trainer.engine.cadence import ProgressCadence
from trainer.large_batch.adascale import AdaScale, check_adascale, check_split, default_decay
from trainer.large_batch.noise_scale import MicroBatchNorms, micro_batch_norms


class AdaScaleCallback(Callback):
    def __init__(self) -> None:
        self.adascale: AdaScale | None = None
        self.norms: MicroBatchNorms | None = None
        self.saved: dict | None = None  # a checkpoint's state, applied once the run is built
        self.first_progress = 0.0  # where this process started (a resume's)
        self.first_step = 0
        self.schedule = None  # the run's (its epochs at the global batch)
        self.schedule_scale = 1.0  # the first global batch / the base batch
        self.measure_every = 4  # one gradient per step: split every n-th step in two

    def on_fit_start(self, run) -> None:
        cfg = run.cfg
        check_adascale(cfg, run.optimizer, cfg.trainer.stages, run.schedule,
                       run.epoch_batches[0])
        self.measure_every = int(cfg.optimizer.get("adascale_measure_every") or 4)
        if self.splits(run):
            check_split(cfg, run.backend, run.epoch_batches[0])
        groups = [group["params"] for group in run.optimizer.param_groups]
        decay = cfg.optimizer.get("adascale_decay")
        if decay is None:  # the paper's, for the largest batch the run may train at
            decay = default_decay(largest_batch(cfg) / cfg.optimizer.base_batch_size)
        self.adascale = AdaScale(cfg.optimizer.base_batch_size, run.loader.global_batch_size,
                                 len(groups), decay)
        # The schedule was laid out in steps of the run's first batch (data.batch_size=auto:
        # M0); the batch may change later (set_global_batch), the schedule's unit does not.
        self.schedule_scale = run.epoch_batches[0] / self.adascale.base_batch
        if self.saved is not None:
            self.adascale.load_state_dict(self.saved, same_batch=not is_auto(cfg))
            self.saved = None
        self.first_progress, self.first_step = self.adascale.progress, run.step
        self.schedule = run.schedule
        self.norms = micro_batch_norms(run.model, groups)
        # Evaluations and checkpoints at points of progress, as in a base-batch run.
        run.cadence = ProgressCadence(lambda: self.adascale.progress, self._epoch_of,
                                      cfg.trainer.eval_every, cfg.trainer.checkpoint_every)
        a, epochs = self.adascale, cfg.trainer.epochs
        most = largest_batch(cfg) / a.base_batch  # (the largest S: data.batch_size=auto's)
        run.logger.info(
            f"AdaScale: S = {a.scale:g} (global batch {a.global_batch} / base batch "
            f"{a.base_batch}); trainer.epochs={epochs} counts base-batch epochs: the run ends "
            f"when its progress reaches them (between {epochs} and {epochs * most:g} real "
            "epochs, as the measured gain goes from S to 1); trainer.eval_every and "
            "trainer.checkpoint_every count base-batch steps of progress (0: evaluate at each "
            "base-batch epoch)")
        self._check_finished(run)  # a resumed run that had already reached its length

    def _position(self) -> float:
        """The progress in the schedule's units: steps at this run's first global batch."""
        return self.adascale.progress / self.schedule_scale

    def _check_finished(self, run) -> None:
        if self._position() >= run.schedule.total_steps:
            run.finished = True

    @staticmethod
    def splits(run) -> bool:
        """One gradient per step (one worker, one micro-batch): AdaScale splits every
        ``measure_every``-th step in two micro-batches to measure the noise."""
        return run.backend.world_size == 1 and run.micro_batches == 1

    def on_step_start(self, run) -> None:
        # By the step's number: the same steps are measured in a resumed run.
        if self.splits(run) and run.step % self.measure_every == 0:
            run.step_micro_batches = 2

    def on_after_backward(self, run) -> None:
        if run.loader.global_batch_size != self.adascale.global_batch:  # (adaptive batch)
            self.adascale.set_global_batch(run.loader.global_batch_size)
        k, world = run.micro_batches_now, run.backend.world_size
        small = torch.stack(self.norms.take(run.step)).mean(dim=0) * (k * k)
        scale_sq = run.precision.loss_scale() ** 2  # fp16 gradients carry the loss scale
        if k == 1 and world == 1:  # a step not measured: the last gains, if it is finite
            self.adascale.hold(math.isfinite(small.sum().item()))
            return
        big = self.norms.averaged(run.step).to(small.device)
        if world > 1:  # every worker's micro-batches (the averaged gradient is the same)
            small = run.backend.all_reduce_sum(small) / world
        values = (torch.cat([small, big]) / scale_sq).tolist()
        n = len(values) // 2
        self.adascale.observe(values[:n], values[n:], run.loader.batch_size // k)

    def on_before_optimizer_step(self, run, optimizer) -> None:
        # The schedule at the scale-invariant progress (tau, before this step), times the gain.
        run.schedule.apply(optimizer, self._position())
        for group, gain in zip(optimizer.param_groups, self.adascale.gains, strict=True):
            group["lr"] *= gain

    def on_step_end(self, run) -> None:
        self.adascale.advance()
        self._check_finished(run)

    def _epoch_of(self, progress: float) -> float:
        """Base-batch steps of progress in base-batch epochs."""
        return self.schedule.epoch_at(progress / self.schedule_scale)

    def _epochs(self, run) -> float:
        return self._epoch_of(self.adascale.progress)

    def on_log(self, run, metrics: dict[str, float]) -> None:
        gain = self.adascale.take_mean_gain()
        if gain is None:
            return
        epochs = self._epochs(run)
        run.logger.scalars({"adascale/gain": gain, "adascale/progress": epochs}, run.step)
        run.logger.note(f"gain {gain:.2f} progress {epochs:.2f} base-batch epochs")

    def on_fit_end(self, run, metrics: dict[str, Any]) -> None:
        if self.norms is not None:
            self.norms.remove()
        a, steps = self.adascale, run.step - self.first_step
        metrics.update({
            "adascale_scale": a.scale,
            "adascale_progress_epochs": self._epochs(run),
            "adascale_final_gain": a.gain,  # the last step's
            # The mean gain of this process's steps (a resumed run: since its resume).
            "adascale_mean_gain": ((a.progress - self.first_progress) / steps if steps
                                   else None),
        })
        run.logger.info(
            f"AdaScale: S = {a.scale:g} (global batch {a.global_batch} / base batch "
            f"{a.base_batch}), {self._epochs(run):.2f} base-batch epochs of progress in "
            f"{run.loader.epochs_done(run.progress.epoch, run.progress.offset):.2f} epochs"
            + (f", mean gain {metrics['adascale_mean_gain']:.2f}" if steps else ""))

    def state_dict(self) -> dict:
        if self.adascale is None:
            return dict(self.saved or {})
        return self.adascale.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.saved = state
