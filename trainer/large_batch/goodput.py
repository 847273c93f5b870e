"""Goodput (Pollux: Qiao et al., OSDI 2021): the training progress per second a global batch M
would give, throughput(M) x statistical efficiency(M), and the batch that maximises it.

- **Throughput** from the run's own step times. One step of global batch M on N workers with k
  micro-batches of m = M / (N k) samples each costs

      t(M) = k (alpha + beta m) + sync

  alpha: a micro-batch's fixed cost (kernel launches, Python, the hooks), beta: its cost per
  sample, sync: the step's gradient all-reduce and optimizer step (0 samples' worth of work;
  one constant for the world size it was measured on). The model is linear in (alpha, beta,
  sync), fitted by least squares to the (k, m, seconds) the run has measured, each
  non-negative (a coefficient the data drive below 0 is dropped and the rest refitted).
  Pollux's model has the same terms (its alpha_c, beta_c, and alpha_n + beta_n for the
  network) plus an overlap exponent gamma for compute hidden behind communication, which a
  CPU run with DDP buckets barely has; it is left out rather than fitted from noise.
  k is the fewest micro-batches for which m fits ``max_micro`` (``data.max_micro_batch``).
- **Efficiency** from the gradient noise scale B (B_simple): a step at batch M is worth
  (B + M0) / (B + M) of the progress M / M0 base steps would make (McCandlish et al. 2018;
  AdaScale's gain r at S = M / M0 is exactly S x this). At M = M0 it is 1.
- **Goodput** = throughput x efficiency, in base-batch samples' worth of progress per second.

Nothing here reads a clock or a device: the controller feeds it measured times and reads its
predictions, so a decision is a function of recorded numbers and can be replayed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StepShape:
    """How a global batch runs: ``micro`` samples per micro-batch, ``micro_batches`` of them
    per worker per step, on ``workers`` workers."""

    micro: float
    micro_batches: int
    workers: int

    @property
    def global_batch(self) -> float:
        return self.micro * self.micro_batches * self.workers


def step_shape(global_batch: int, workers: int, max_micro: int | None,
               min_micro_batches: int = 1) -> StepShape:
    """The fewest micro-batches per worker (at least ``min_micro_batches``) for which each
    holds at most ``max_micro`` samples."""
    per_worker = global_batch / workers
    k = max(min_micro_batches, math.ceil(per_worker / max_micro) if max_micro else 1)
    return StepShape(per_worker / k, k, workers)


@dataclass
class ThroughputModel:
    """t = k (alpha + beta m) + sync seconds per step (module docstring)."""

    alpha: float = 0.0
    beta: float = 0.0
    sync: float = 0.0

    def seconds(self, shape: StepShape) -> float:
        return shape.micro_batches * (self.alpha + self.beta * shape.micro) + self.sync

    def samples_per_second(self, shape: StepShape) -> float:
        return shape.global_batch / self.seconds(shape)

    @classmethod
    def fit(cls, observations: list[tuple[StepShape, float]]) -> ThroughputModel:
        """Least squares over (shape, seconds per step), relative errors weighted equally (a
        small batch's step is as important to predict as a large one's), coefficients >= 0.
        Steps at two or more micro-batch sizes separate alpha from beta, and at two or more
        micro-batch counts alpha from sync."""
        if not observations:
            raise ValueError("no step times to fit the throughput model to")
        k = np.array([s.micro_batches for s, _ in observations], dtype=np.float64)
        m = np.array([s.micro for s, _ in observations], dtype=np.float64)
        t = np.array([seconds for _, seconds in observations], dtype=np.float64)
        features = np.stack([k, k * m, np.ones_like(k)], axis=1) / t[:, None]
        target = np.ones_like(t)  # (prediction / measured) = 1
        # A term the observations cannot tell apart from another is left out: with one
        # micro-batch size, alpha from beta (kept: beta); with one micro-batch count, alpha
        # from sync (kept: alpha, so a step that accumulates is predicted to cost its fixed
        # part per micro-batch, the cautious side).
        keep = [0, 1, 2]
        if len({round(x, 6) for x in m}) == 1:
            keep.remove(0)
        if len(set(k)) == 1 and 0 in keep:
            keep.remove(2)
        while True:
            coef, *_ = np.linalg.lstsq(features[:, keep], target, rcond=None)
            if (coef >= 0).all() or len(keep) == 1:
                break
            keep = [i for i, c in zip(keep, coef, strict=True) if c >= 0] or [1]
        values = dict.fromkeys(range(3), 0.0)
        values.update({i: max(float(c), 0.0) for i, c in zip(keep, coef, strict=True)})
        return cls(alpha=values[0], beta=values[1], sync=values[2])

    def state_dict(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "sync": self.sync}


def efficiency(batch: float, base_batch: float, noise_scale: float) -> float:
    """The progress a step at ``batch`` makes per sample, relative to one at ``base_batch``:
    (B + M0) / (B + M) for gradient noise scale B."""
    return (noise_scale + base_batch) / (noise_scale + batch)


def goodput(model: ThroughputModel, shape: StepShape, base_batch: float,
            noise_scale: float) -> float:
    """Base-batch samples' worth of progress per second at this shape."""
    return (model.samples_per_second(shape)
            * efficiency(shape.global_batch, base_batch, noise_scale))


def candidates(low: int, high: int, quantum: int, per_octave: int = 4) -> list[int]:
    """Global batches to consider: multiples of ``quantum`` from ``low`` to ``high``, about
    ``per_octave`` per doubling (geometric, as goodput varies with log M), ``low`` and
    ``high`` included when they are multiples."""
    low_q = max(quantum, math.ceil(low / quantum) * quantum)
    high_q = (high // quantum) * quantum
    if high_q < low_q:
        return []
    out, value = {low_q, high_q}, float(low_q)
    while value < high_q:
        value *= 2 ** (1 / per_octave)
        out.add(min(high_q, max(low_q, round(value / quantum) * quantum)))
    return sorted(out)


@dataclass(frozen=True)
class Choice:
    """What the controller would do: the best batch, its predicted goodput against the
    current batch's, and whether that clears the threshold."""

    batch: int
    gain: float  # predicted goodput(batch) / goodput(current)
    change: bool


def choose(model: ThroughputModel, current: int, options: list[int], base_batch: int,
           noise_scale: float, shape_of, threshold: float) -> Choice:
    """The option of highest predicted goodput; a change only when it beats the current
    batch's by more than ``threshold`` (0.05: 5%), so noise in the fit does not make the
    batch oscillate. ``shape_of(batch) -> StepShape``."""
    now = goodput(model, shape_of(current), base_batch, noise_scale)
    scored = [(goodput(model, shape_of(b), base_batch, noise_scale), -b, b) for b in options]
    best_goodput, _, best = max(scored)
    gain = best_goodput / now
    return Choice(best, gain, best != current and gain > 1 + threshold)
