"""The goodput controller (``data.batch_size=auto``): the run chooses its global batch as it
trains, between ``data.batch_size_min`` (M0, AdaScale's base batch) and
``data.batch_size_max``, by the batch of highest predicted goodput (Pollux, Qiao et al. 2021;
trainer/large_batch/goodput.py): throughput from the run's own step times x statistical
efficiency from the live gradient noise scale (AdaScale's statistics, which set each step's
learning rate at whatever batch is chosen).

- **Profile**: the run starts with ``profile_steps`` steps at M0 and as many at a second batch
  (the geometric middle of the range), so the step-time model has two micro-batch sizes to
  fit from; these are training steps like any other (AdaScale counts their progress).
- **Decisions** at deterministic points: the end of the profile, then every ``decide_every``
  epochs' worth of samples. Rank 0 refits the step-time model to the median step time of
  every shape measured so far (on this world size where it has two), scores the candidate
  batches (multiples of workers x micro-batches x the Ghost BN size, about four per
  doubling), and changes the batch only when the best one's predicted goodput beats the
  current batch's by more than ``threshold``; no decision while B_simple is not measurable
  (the batch stays); the choice is broadcast to every rank.
- **The plan** (trainer/large_batch/batch_plan.py): every change, keyed by samples seen, with
  its reason, predicted gain, noise scale and fitted model. It is in every checkpoint (a
  resumed run continues from the same batch at the same sample and then goes on deciding)
  and in ``batch_plan.json`` in the run directory; ``data.batch_plan=PATH`` replays one
  without timing anything, on any number of workers. The loader changes the batch at a
  sample offset inside an epoch (trainer/data/memory.py): no sample is skipped or repeated.

Logged: ``batch/global`` on every log line, ``batch/predicted_gain``, ``batch/b_simple`` at
each decision, a line per change; ``batch_changes``, ``batch_plan`` and ``batch_trace`` (every
decision point: batch, B_simple, AdaScale's gain, lr, predicted goodput of the batch and of
the best one) in metrics.json, which trainer-report shows over training.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from trainer.callbacks import Callback
from trainer.config.batch_size import is_auto, largest_batch
from trainer.errors import UserError
from trainer.large_batch.batch_plan import BatchPlan, Decision
from trainer.large_batch.goodput import (
    StepShape,
    ThroughputModel,
    candidates,
    choose,
    goodput,
)

PLAN_FILE = "batch_plan.json"


class AdaptiveBatch(Callback):
    """Args:
        decide_every: epochs' worth of samples between decisions (after the profile).
        threshold: the predicted goodput gain a change must beat (0.1: 10%; goodput is
            flat near its peak, where step-time noise alone would flip a smaller one).
        profile_steps: steps at each of the profile's two batches.
        window: the most recent step times kept per shape (their median is the shape's).
    """

    def __init__(self, decide_every: float = 0.25, threshold: float = 0.1,
                 profile_steps: int = 6, window: int = 50) -> None:
        if not decide_every > 0:
            raise UserError(f"callbacks.adaptive_batch.decide_every={decide_every}: use a "
                            "positive share of an epoch")
        if not threshold >= 0:
            raise UserError(f"callbacks.adaptive_batch.threshold={threshold}: use a gain "
                            ">= 0 (0.05: a change must promise 5% more goodput)")
        if profile_steps < 2 or window < 1:
            raise UserError(f"callbacks.adaptive_batch: profile_steps={profile_steps}, "
                            f"window={window}: use profile_steps >= 2 (one step per batch "
                            "is the warm-up) and window >= 1")
        self.decide_every, self.threshold = decide_every, threshold
        self.profile_steps, self.window = profile_steps, window
        self.plan: BatchPlan | None = None
        self.saved: dict | None = None
        self.replay = False  # data.batch_plan: apply the plan, decide nothing
        # Recent seconds per step of each shape measured: (micro, micro_batches, workers).
        self.times: dict[tuple[float, int, int], list[float]] = {}
        self.next_point = 0.0  # samples seen at which the next decision is due (inf: none)
        self.trace: list[dict] = []  # every decision point, taken or not (rank 0's)
        self.last_end: float | None = None  # the last step's end (None: do not time the next)
        self.adascale = None

    # --- set-up -----------------------------------------------------------------------------

    def on_fit_start(self, run) -> None:
        data, opt = run.cfg.data, run.cfg.optimizer
        if not is_auto(run.cfg):
            raise UserError(f"callbacks.adaptive_batch chooses the batch of data.batch_size="
                            f"auto, and this run's is {data.batch_size}: set "
                            "data.batch_size=auto, or drop callbacks.adaptive_batch")
        self.adascale = run.callbacks.named.get("adascale")
        if self.adascale is None:
            raise UserError("data.batch_size=auto needs AdaScale's statistics and learning "
                            "rate: keep optimizer.scale_lr=adascale (and its callback)")
        self.base = int(opt.base_batch_size)
        self.high = min(largest_batch(run.cfg), len(run.data.train))
        self.workers, self.min_k = run.backend.world_size, run.micro_batches
        self.fixed_k = not run.backend.can_split_steps  # Horovod: k is built in
        self.max_micro = data.get("max_micro_batch")
        self.ghost = int(run.cfg.model.get("ghost_batch_size") or 1)
        # One worker, one micro-batch: AdaScale splits some steps in two halves.
        self.halves = 2 if self.adascale.splits(run) else 1
        self.every = max(1, round(self.decide_every * len(run.data.train)))
        self.path = Path(run.run_dir) / PLAN_FILE
        samples = run.progress.samples
        if data.get("batch_plan"):
            self.plan, self.replay = BatchPlan.read(Path(data.batch_plan)), True
            how = (f"replaying data.batch_plan={data.batch_plan} "
                   f"({len(self.plan.decisions)} changes)")
        elif self.saved is not None:
            self.plan = BatchPlan.from_state(self.saved["plan"])
            self.times = {tuple(key): list(values) for *key, values in self.saved["times"]}
            self.next_point = float(self.saved["next_point"])
            self.trace = list(self.saved.get("trace", []))
            how = (f"resumed at {samples:,} samples with its plan "
                   f"({len(self.plan.decisions)} changes)")
        else:
            self.plan, how = self._profile_plan(), "profiling, then deciding"
        self.saved = None
        batch = self.plan.batch_at(samples)
        if self.shape_of(batch) is None and not self.replay:
            # Another world size (Horovod elastic, a resume on other workers): the nearest
            # batch this one can split.
            batch = min(self.options(), key=lambda b: abs(math.log(b / batch)))
            self._record(run, Decision(samples, batch, self.plan.batch_at(samples), run.step,
                                       reason=f"{self.workers} workers"))
        self.apply(run, batch)
        run.logger.info(
            f"batch: data.batch_size=auto from {self.base} to {self.high} (M0 = "
            f"optimizer.base_batch_size = {self.base}), now {batch}; {how}; a change needs "
            f"{self.threshold:.0%} more predicted goodput; decisions every "
            f"{self.every:,} samples")
        self._write(run)

    def _profile_plan(self) -> BatchPlan:
        """M0 for ``profile_steps`` steps, then the batch in the geometric middle of the
        range: two micro-batch sizes for the step-time model (the first decision is at the
        end of the second)."""
        plan = BatchPlan(self.base)
        options = [b for b in self.options() if b > self.base]
        if not options:
            self.next_point = math.inf  # nothing to choose between
            return plan
        middle = min(options, key=lambda b: abs(math.log(b / math.sqrt(self.base * self.high))))
        at = self.profile_steps * self.base
        plan.record(Decision(at, middle, self.base, self.profile_steps, reason="profile"))
        self.next_point = at + self.profile_steps * middle
        return plan

    # --- shapes -----------------------------------------------------------------------------

    def shape_of(self, batch: int) -> StepShape | None:
        """How ``batch`` runs here: the fewest micro-batches (at least the run's) that split
        each worker's share into equal micro-batches of at most data.max_micro_batch, each
        a whole number of Ghost BN batches (one micro-batch: of two halves' worth, for the
        steps AdaScale splits); None where none does."""
        per, rest = divmod(batch, self.workers)
        if rest or per < 1:
            return None
        counts = [self.min_k] if self.fixed_k else range(self.min_k, per + 1)
        for k in counts:
            micro, rest = divmod(per, k)
            if rest or micro % (self.ghost * (self.halves if k == 1 else 1)):
                continue
            if self.max_micro is None or micro <= self.max_micro:
                return StepShape(float(micro), k, self.workers)
        return None

    def options(self) -> list[int]:
        quantum = self.workers * self.min_k * self.ghost * self.halves
        return [b for b in candidates(self.base, self.high, quantum) if self.shape_of(b)]

    def apply(self, run, batch: int) -> None:
        """Train at ``batch`` from the next step on."""
        shape = self.shape_of(batch)
        if shape is None:
            raise UserError(
                f"data.batch_plan: the global batch {batch} does not split over "
                f"{self.workers} workers x {self.min_k} micro-batches"
                + (f" of at most data.max_micro_batch={self.max_micro}" if self.max_micro
                   else "") + "; replay it on a number of workers that divides it")
        try:
            run.loader.resize(batch)
        except ValueError as exc:
            raise UserError(f"data.batch_plan: {exc}; replay the plan on the data it was "
                            "made for") from None
        run.micro_batches = shape.micro_batches
        self.last_end = None  # the first step at a size warms up: not timed

    # --- each step ----------------------------------------------------------------------------

    def on_epoch_start(self, run) -> None:
        # (The loop set the schedule's batch for the epoch; the plan's is the one.)
        batch = self.plan.batch_at(run.progress.samples)
        if run.loader.global_batch_size != batch:
            self.apply(run, batch)
        self.last_end = None  # the epoch's end (evaluation, checkpoint) is not a step

    def on_step_end(self, run) -> None:
        now, p = time.perf_counter(), run.progress
        if self.last_end is not None and not self.replay:
            key = self._key(run)
            kept = self.times.setdefault(key, [])
            kept.append(now - self.last_end)
            del kept[:-self.window]
        self.last_end = now
        if p.samples >= self.next_point and not self.replay:
            self._decide(run)
            self.next_point = p.samples + self.every
        batch = self.plan.batch_at(p.samples)
        if batch != run.loader.global_batch_size:
            old = run.loader.global_batch_size
            self.apply(run, batch)
            why = [d.reason for d in self.plan.decisions if d.samples <= p.samples][-1]
            run.logger.info(f"batch: {old} -> {batch} at step {p.step} ({p.samples:,} "
                            f"samples): {why}")

    def _key(self, run) -> tuple[float, int, int]:
        k = run.micro_batches_now  # (a step AdaScale split to measure is timed as such)
        return (run.loader.batch_size / k, k, self.workers)

    def on_eval_end(self, run, metrics: dict[str, float]) -> None:
        self.last_end = None  # (an evaluation's time is not a step's)

    def on_checkpoint(self, run, path) -> None:
        self.last_end = None

    # --- decisions ----------------------------------------------------------------------------

    def _decide(self, run) -> None:
        """Rank 0 chooses (its own step times), every rank records its choice."""
        decision = run.backend.on_primary(lambda: self._choose(run))
        if decision is not None:
            self._record(run, decision)

    def _choose(self, run) -> Decision | None:
        p, current = run.progress, run.loader.global_batch_size
        stats = self.adascale.adascale.total
        noise = stats.value  # B_simple, None while it is not measurable
        observed = self._observations()
        model = ThroughputModel.fit(observed) if observed else None
        if noise is None or model is None:  # (no decision on a noise scale not measured)
            return None
        options = self.options()
        if current not in options:
            options = sorted({*options, current})
        choice = choose(model, current, options, self.base, noise, self.shape_of,
                        self.threshold)
        now = goodput(model, self.shape_of(current), self.base, noise)
        self.trace.append({
            "step": p.step, "samples": p.samples, "batch": current, "b_simple": noise,
            "gain": self.adascale.adascale.gain, "lr": run.optimizer.param_groups[0]["lr"],
            "goodput": now, "best": choice.batch, "best_goodput": now * choice.gain,
            "changed": choice.change})
        run.logger.scalars({"batch/b_simple": noise, "batch/predicted_gain": choice.gain},
                           p.step)
        if not choice.change:
            return None
        return Decision(p.samples, choice.batch, current, p.step, choice.gain, noise,
                        model.state_dict(),
                        reason=f"predicted goodput x{choice.gain:.2f} at B_simple {noise:,.0f}")

    def _observations(self) -> list[tuple[StepShape, float]]:
        """Each measured shape with its median step time; this world size's where they
        separate the model's terms (two micro-batch sizes), every one's otherwise."""
        def median(keys):
            return [(StepShape(*key), statistics.median(self.times[key])) for key in keys]

        here = [key for key in self.times if key[2] == self.workers]
        if len({key[0] for key in here}) >= 2:
            return median(here)
        return median(self.times)

    def _record(self, run, decision: Decision) -> None:
        self.plan.record(decision)
        if decision.predicted_gain is not None:
            run.logger.scalars({"batch/chosen": decision.new}, decision.step)
        self._write(run)

    def _write(self, run) -> None:
        if run.backend.is_primary:
            self.plan.write(self.path)

    # --- reporting and state ------------------------------------------------------------------

    def on_log(self, run, metrics: dict[str, float]) -> None:
        run.logger.scalars({"batch/global": run.loader.global_batch_size}, run.step)
        run.logger.note(f"batch {run.loader.global_batch_size}")

    def on_fit_end(self, run, metrics: dict[str, Any]) -> None:
        metrics["batch_changes"] = len(self.plan.decisions)
        metrics["batch_plan"] = str(self.path)
        metrics["batch_trace"] = self.trace
        self._write(run)

    def state_dict(self) -> dict:
        if self.plan is None:
            return dict(self.saved or {})
        return {"plan": self.plan.state_dict(), "next_point": self.next_point,
                "times": [[*key, list(values)] for key, values in self.times.items()],
                "trace": self.trace}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.saved = state
