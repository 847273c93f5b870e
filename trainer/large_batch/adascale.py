"""AdaScale SGD (Johnson, Agrawal, Gu, Guestrin, ICML 2020): one learning-rate schedule for any
batch size, its gain measured live from the gradient noise.

At a global batch B = S x M0 (M0: ``optimizer.base_batch_size``, the batch the schedule was
written for), each step's learning rate is the schedule's, read at the run's scale-invariant
progress, times the gain

    r = (sigma^2 + |G|^2) / (sigma^2 / S + |G|^2) = (1 + B_simple / M0) / (1 + B_simple / B)

with sigma^2 = tr(Sigma) / M0 the variance of a base-batch gradient and |G|^2 the squared norm
of the true gradient: r is S where the gradient is all noise (a batch S times larger is worth
S base steps) and 1 where it has none (it is worth one). Progress advances by r each step, in
base-batch steps (the paper's scale-invariant iterations tau), so the schedule and the run's
length, written for the base batch, hold at any batch.

The statistics are the gradient noise scale's (trainer/large_batch/noise_scale.py): from the
gradients of the step's micro-batches (every micro-batch of every worker, batch b) and of the
averaged global batch (B), per optimizer parameter group, the unbiased estimates of |G|^2
and tr(Sigma); averaged over steps with decay theta (by default the paper's
max(1 - S/1000, 0), with a floor of 0.9 here, an average over about 20 measured steps: at
S >= 1000 the paper's theta is 0, and one step's estimate from a few micro-batches would set
the gain alone); clipped at 0 before the ratio, so r stays in [1, S]. r is 1 until 10 steps
are measured and the total |G|^2 or tr(Sigma) average is first clearly (two standard errors)
above zero: until then the estimates cannot tell signal from noise, and 1 is the safe end
(plain SGD at the base rate).
After that the clipped estimate holds: a clear |G|^2 gives the formula's value, clear noise
without a clear |G|^2 a gain near S (where the true gain is).

One worker with one micro-batch per step has one gradient: every
``optimizer.adascale_measure_every``-th step (4) runs as two half-batch micro-batches (the
same update, from two backward passes) and is measured; the steps between train with the last
gains. Consecutive steps' gradients, which AdaptDL pairs instead, are not of one point: the
parameters move between them, and the change of the true gradient counts as noise (on the
MNIST MLP at lr 0.05 and batch 512, a gain of 3.7 where two micro-batches of each step measure
2.2; docs/large_batch.md), even with a second difference over three steps to cancel the
momentum's drift.

Unlike the B_simple report, this needs the step's statistics on the host before the step (the
gain multiplies its learning rate): one all-reduce of one number per group per step (the
workers' own micro-batch norms; the averaged gradient's are equal everywhere) and one read.
Only runs that ask for AdaScale pay it.
"""

from __future__ import annotations

import math

import torch

from trainer.errors import UserError
from trainer.large_batch.noise_scale import NoiseScale
from trainer.optim.schedule import IncreaseBatch

# The shortest average (decay per step) of the statistics; see the module docstring.
_MIN_DECAY = 0.9
# Steps before the first gain other than 1: a standard error from fewer steps is itself too
# noisy to test the averages against.
_MIN_STEPS = 10
_SIGNIFICANT = 2.0  # standard errors


def default_decay(scale: float) -> float:
    """The paper's theta = max(1 - S/1000, 0), no lower than ``_MIN_DECAY``."""
    return max(1.0 - scale / 1000.0, _MIN_DECAY)


class AdaScale:
    """The gain per parameter group and the scale-invariant progress of one run.

    Args:
        base_batch: M0, the batch the learning-rate schedule was written for.
        global_batch: B, the batch each step trains on (>= M0).
        groups: how many optimizer parameter groups (a gain each).
        decay: averaging of the statistics per step (None: :func:`default_decay`).
    """

    def __init__(self, base_batch: int, global_batch: int, groups: int,
                 decay: float | None = None) -> None:
        self.base_batch, self.global_batch = base_batch, global_batch
        self.scale = global_batch / base_batch
        self.decay = default_decay(self.scale) if decay is None else decay
        self.groups = [NoiseScale(self.decay) for _ in range(groups)]
        self.total = NoiseScale(self.decay)  # all groups together: the progress's gain
        self.measured = False  # the statistics have once been measurable (_measurable)
        self.progress = 0.0  # tau: base-batch steps done
        self.gains = [1.0] * groups  # this step's
        self.gain = 1.0  # this step's, all groups together
        self.gain_sum = 0.0  # over the steps since the last log line (for its mean)
        self.gain_steps = 0
        self.stepped = False  # this step's statistics were finite

    def set_global_batch(self, global_batch: int) -> None:
        """Train at another global batch from this step on (the adaptive batch size): the
        statistics are estimates of |G|^2 and tr(Sigma), whatever batch measured them, and
        carry over; the averaging (decay) stays the run's."""
        self.global_batch, self.scale = global_batch, global_batch / self.base_batch

    def _gain(self, stats: NoiseScale) -> float:
        grad_sq, trace = (max(v, 0.0) for v in stats.means())
        if not self.measured or grad_sq + trace <= 0:
            return 1.0
        gain = (trace / self.base_batch + grad_sq) / (trace / self.global_batch + grad_sq)
        return min(max(gain, 1.0), self.scale)

    def observe(self, small_sq: list[float], big_sq: list[float], micro_batch: int,
                big_batch: int | None = None) -> None:
        """One step's statistics, per group: the mean squared norm of the micro-batch
        gradients (batch ``micro_batch``, averaged over workers) and of the averaged gradient
        (batch ``big_batch``: the global batch, or two steps' for a step pair). Sets this
        step's gains. A non-finite step (an fp16 overflow, which the scaler skips) changes
        nothing and keeps the last gains."""
        b, big = micro_batch, big_batch or self.global_batch
        self.stepped = self.total.fold(sum(small_sq), sum(big_sq), b, big)
        if not self.stepped:
            return
        for stats, s, g in zip(self.groups, small_sq, big_sq, strict=True):
            stats.fold(s, g, b, big)
        self.measured = self.measured or _measurable(self.total)
        self.gains = [self._gain(stats) for stats in self.groups]
        self.gain = self._gain(self.total)

    def hold(self, finite: bool) -> None:
        """A step with no statistics of its own (the first of a step pair): it trains with
        the last gains, and advances the progress unless it overflowed (``finite``)."""
        self.stepped = finite

    def advance(self) -> None:
        """The step was taken with this step's gain: progress moves on by it (not for a
        step the fp16 scaler skipped)."""
        if not self.stepped:
            return
        self.progress += self.gain
        self.gain_sum += self.gain
        self.gain_steps += 1

    def take_mean_gain(self) -> float | None:
        """The mean gain since the last call (the log line's), or None if no step."""
        if not self.gain_steps:
            return None
        mean = self.gain_sum / self.gain_steps
        self.gain_sum, self.gain_steps = 0.0, 0
        return mean

    def state_dict(self) -> dict:
        return {"progress": self.progress, "measured": self.measured, "gains": list(self.gains),
                "gain": self.gain, "total": self.total.state_dict(),
                "groups": [stats.state_dict() for stats in self.groups],
                "scale": self.scale}

    def load_state_dict(self, state: dict, same_batch: bool = True) -> None:
        """``same_batch``: the run trains at one batch, which must be the checkpoint's (an
        adaptive run's batch is its plan's: set_global_batch)."""
        if len(state["groups"]) != len(self.groups):
            raise UserError(
                f"the checkpoint's AdaScale state has {len(state['groups'])} parameter groups, "
                f"this run's optimizer {len(self.groups)}: resume with the optimizer it was "
                "saved with (optimizer.exclude_bias_and_norm)")
        if same_batch and not math.isclose(state["scale"], self.scale):
            raise UserError(
                f"the checkpoint's AdaScale ran at S={state['scale']:g} (global batch / "
                f"optimizer.base_batch_size), this run at S={self.scale:g}: its statistics and "
                "progress are for that batch; resume with the same data.batch_size and "
                "optimizer.base_batch_size")
        self.progress, self.measured = state["progress"], state["measured"]
        self.gains, self.gain = list(state["gains"]), state["gain"]
        self.total.load_state_dict(state["total"])
        for stats, saved in zip(self.groups, state["groups"], strict=True):
            stats.load_state_dict(saved)


def _measurable(stats: NoiseScale) -> bool:
    """Enough steps, and |G|^2 or tr(Sigma) clearly (two standard errors) above zero: then the
    gain is known to be near its formula (a clear |G|^2), or near S (clear noise, no clear
    signal). Before that, neither can be told from the estimates' own noise."""
    if stats.steps < _MIN_STEPS:
        return False
    grad_sq, trace = stats.means()
    return (grad_sq > _SIGNIFICANT * stats.grad_sq_stderr
            or trace > _SIGNIFICANT * stats.trace_stderr)


def check_adascale(cfg, optimizer, stages, schedule, global_batch: int) -> None:
    """What AdaScale cannot run with, in one line each (before the first step);
    ``global_batch``: the run's first."""
    opt = cfg.optimizer
    target = str(opt.get("_target_", ""))
    if global_batch < opt.base_batch_size:
        raise UserError(
            f"optimizer.scale_lr=adascale: data.batch_size={global_batch} is smaller "
            f"than optimizer.base_batch_size={opt.base_batch_size}, the batch the schedule "
            "was written for; AdaScale only scales up: lower optimizer.base_batch_size")
    if not _is_sgd(optimizer):
        raise UserError(
            f"optimizer.scale_lr=adascale is AdaScale SGD (SGD with or without momentum); "
            f"{target or type(optimizer).__name__} adapts its steps itself and the gain's "
            "derivation does not hold for it (docs/large_batch.md): use optimizer=sgd, or "
            "optimizer.scale_lr=sqrt for Adam-type optimizers")
    if stages:
        raise UserError("optimizer.scale_lr=adascale with trainer.stages: a stage rebuilds the "
                        "optimizer's groups, whose statistics AdaScale keeps; use one stage")
    if isinstance(schedule, IncreaseBatch):
        raise UserError("optimizer.scale_lr=adascale with schedule=increase_batch: AdaScale "
                        "runs at one global batch (its gain is for that batch); use another "
                        "schedule")


def check_split(cfg, backend, global_batch: int) -> None:
    """One worker with one micro-batch: the steps AdaScale measures run as two equal halves
    (each a whole number of Ghost BN batches); Horovod builds its micro-batch count into its
    optimizer, so there a step cannot be split."""
    if not backend.can_split_steps:
        raise UserError(
            "optimizer.scale_lr=adascale measures the gradient noise from at least two "
            "gradients per step, and one Horovod worker with trainer.accumulate=1 has one "
            "(Horovod cannot split single steps): set trainer.accumulate=2, or run on several "
            "workers")
    ghost = int(cfg.model.get("ghost_batch_size") or 1)
    if global_batch % (2 * ghost):
        raise UserError(
            f"optimizer.scale_lr=adascale on one worker splits every "
            f"optimizer.adascale_measure_every-th step in two halves to measure the gradient "
            f"noise, and data.batch_size={global_batch} does not split into two halves of "
            + (f"whole model.ghost_batch_size={ghost} batches" if ghost > 1 else "equal size")
            + f": use a multiple of {2 * ghost}")


def _is_sgd(optimizer) -> bool:
    """torch's SGD (Horovod's DistributedOptimizer subclasses the class it wraps)."""
    return isinstance(optimizer, torch.optim.SGD)
