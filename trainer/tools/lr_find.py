"""``trainer-lr-find [OPTIONS] [OVERRIDES]``: the learning-rate range test (Smith 2017).

    trainer-lr-find recipe=mnist            # then: trainer recipe=mnist optimizer.lr=...
    torchrun --nproc-per-node 4 -m trainer.tools.lr_find recipe=mnist optimizer=lars

The run the overrides describe (same model, optimizer, global batch, workers and backend, so
LARS/LAMB and large batches are measured as they will train) takes ``--steps`` steps while
``optimizer.lr`` grows exponentially from ``--min-lr`` to ``--max-lr`` (every parameter group
keeps its configured ratio to it; the schedule is held constant, no warmup). The loss of each
step (averaged over workers) is smoothed (an exponential average, bias-corrected); the sweep
stops once the smoothed loss exceeds 4 times its minimum (divergence). The suggestion is the
lr where the smoothed loss fell fastest (per factor of lr), before its minimum: the largest
rate that still clearly improves the loss (Smith's reading of the curve; Lightning's tuner
suggests the same point). The curve is read only up to its first clear rise (10% over its
lowest so far): on the MNIST MLP (SGD, momentum 0.9, batch 128, the 55,000 training images)
the loss spiked at lr 0.27, recovered and dipped lower at 0.81 before diverging, and a minimum
taken past the spike suggested 0.705, at which 2 epochs reach 10%; read to the spike it
suggests 0.13 (lowest at 0.20), and 2 epochs at it pass 97% (tested).

Writes ``lr_find.csv`` (step, lr, loss, smoothed loss) and ``lr_find.png`` (loss against lr,
log scale, the suggestion marked, the whole curve from where it started) into its run
directory (``--out``, else ``hydra.run.dir`` if given, else ``outputs/lr_find/<time>``), logs
each step's swept lr, and prints the suggestion with the command to use (quoted for the shell,
without the sweep's ``hydra.run.dir``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from trainer.callbacks import Callback
from trainer.errors import UserError

DIVERGED = 4.0  # the smoothed loss over its minimum that ends the sweep
SMOOTHING = 0.9  # exponential average of the loss
RISE = 0.1  # a smoothed loss this far over its lowest so far ends the usable curve


class LRRangeTest(Callback):
    """Set ``optimizer.lr`` for each step along the exponential sweep and record the loss."""

    def __init__(self, configured_lr: float, min_lr: float, max_lr: float, steps: int) -> None:
        self.configured, self.min_lr, self.max_lr, self.steps = configured_lr, min_lr, max_lr, steps
        self.rows: list[tuple[int, float, float, float]] = []  # step, lr, loss, smoothed
        self._average, self._lr = 0.0, min_lr

    def lr_at(self, step: int) -> float:
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / max(self.steps - 1, 1))

    def on_step_start(self, run) -> None:
        # After the (constant) schedule set each group's configured lr: scale all alike.
        self._lr = self.lr_at(run.step)
        for group in run.optimizer.param_groups:
            group["lr"] *= self._lr / self.configured

    def on_log(self, run, metrics: dict[str, float]) -> None:  # every step (log_every=1)
        loss = metrics["train/loss"]
        self._average = SMOOTHING * self._average + (1 - SMOOTHING) * loss
        smoothed = self._average / (1 - SMOOTHING ** (len(self.rows) + 1))
        self.rows.append((run.step, self._lr, loss, smoothed))
        lowest = min(r[3] for r in self.rows)
        if not math.isfinite(smoothed) or smoothed > DIVERGED * lowest:
            run.request_stop(f"lr range test: the loss diverged at lr {self._lr:.3g}")

    def suggestion(self) -> tuple[float, float]:
        """(suggested lr: the steepest fall of the smoothed loss before its minimum, the lr of
        the lowest smoothed loss before the curve first rises)."""
        finite = [r for r in self.rows if math.isfinite(r[3])]
        if len(finite) < 5:
            raise UserError(
                f"the lr range test got only {len(finite)} finite losses; lower --min-lr "
                "or raise --steps")
        # The curve up to its first clear rise (the smoothed loss 10% over its lowest so far):
        # a spike that later recovers already says the lr is too high, and a lower minimum
        # past it is luck, not a rate to train at.
        lowest, end = finite[0][3], len(finite)
        for i, row in enumerate(finite):
            if row[3] > (1 + RISE) * lowest:
                end = i
                break
            lowest = min(lowest, row[3])
        best = min(range(end), key=lambda i: finite[i][3])
        # The slope between neighbours, per unit of log(lr); the most negative one wins.
        slopes = [((finite[i + 1][3] - finite[i][3])
                   / math.log(finite[i + 1][1] / finite[i][1]), i) for i in range(best)]
        steepest = min(slopes)[1] if slopes else best
        return finite[steepest][1], finite[best][1]

    def on_fit_end(self, run, metrics: dict[str, Any]) -> None:
        if run.is_primary and self.rows:
            write_outputs(run.run_dir, self.rows, *self.suggestion())


def write_outputs(folder: Path, rows: list, suggested: float, lowest: float) -> None:
    with open(folder / "lr_find.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "lr", "loss", "smoothed_loss"])
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([r[1] for r in rows], [r[2] for r in rows], alpha=0.3, label="loss")
    ax.plot([r[1] for r in rows], [r[3] for r in rows], label="smoothed loss")
    ax.axvline(suggested, color="green", linestyle="--",
               label=f"suggested lr {suggested:.3g} (steepest fall)")
    ax.axvline(lowest, color="grey", linestyle=":", label=f"lowest loss at {lowest:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("optimizer.lr")
    ax.set_ylabel("training loss")
    finite = [r[3] for r in rows if math.isfinite(r[3])]
    # Up to where the sweep diverged, but never below where it started: the whole curve.
    ax.set_ylim(0, max(finite[0], min(max(finite), DIVERGED * min(finite))) * 1.05)
    ax.legend()
    ax.set_title("learning-rate range test")
    fig.tight_layout()
    fig.savefig(folder / "lr_find.png", dpi=100)
    plt.close(fig)


def lr_find(overrides: list[str], out: Path, min_lr: float, max_lr: float,
            steps: int) -> tuple[float, float, LRRangeTest]:
    """Run the sweep; (suggested lr, lr of the lowest loss, the recorder)."""
    from hydra.errors import HydraException

    from trainer.config import compose_config
    from trainer.tools.hydra_errors import one_line
    from trainer.tools.train import train

    if not 0 < min_lr < max_lr < math.inf:
        raise UserError(f"--min-lr {min_lr} --max-lr {max_lr}: use 0 < min < max")
    if steps < 10:
        raise UserError(f"--steps {steps}: use at least 10")
    forced = [f"trainer.max_steps={steps}", "trainer.log_every=1", "trainer.epochs=100000",
              "trainer.eval_every=0", "++callbacks.early_stopping=null", "trainer.keep_last=1",
              "schedule=constant", "trainer.resume=null", "logger.sample_predictions=0",
              "trainer.test=false"]
    try:
        cfg = compose_config(*overrides, *forced)
    except HydraException as exc:
        raise UserError(one_line(exc)) from None
    sweep = LRRangeTest(float(cfg.optimizer.lr), min_lr, max_lr, steps)
    out.mkdir(parents=True, exist_ok=True)
    train(cfg, out, objects={"callbacks": [sweep]})
    suggested, lowest = sweep.suggestion()
    return suggested, lowest, sweep


def main(argv: list[str] | None = None) -> None:
    import logging

    from trainer.parallel import identity

    parser = argparse.ArgumentParser(prog="trainer-lr-find",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="the training run's overrides")
    parser.add_argument("--min-lr", type=float, default=1e-5)
    parser.add_argument("--max-lr", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None,
                        help="run directory (default: hydra.run.dir if given, else "
                             "outputs/lr_find/<time>)")
    args = parser.parse_args(argv)
    # hydra.run.dir=... among the overrides is where this sweep writes (and not part of the
    # command it suggests: that run gets a directory of its own).
    run_dirs = [a.partition("=")[2] for a in args.overrides
                if a.partition("=")[0].lstrip("+") == "hydra.run.dir"]
    overrides = [a for a in args.overrides if a.partition("=")[0].lstrip("+") != "hydra.run.dir"]
    primary = identity.from_environment().is_primary
    logging.basicConfig(level=logging.INFO if primary else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    out = args.out or (Path(run_dirs[-1]) if run_dirs else Path("outputs") / "lr_find"
                       / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    try:
        suggested, lowest, _ = lr_find(overrides, out.absolute(), args.min_lr, args.max_lr,
                                       args.steps)
    except UserError as exc:
        print(f"trainer-lr-find: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if primary:
        # Quoted for the shell: hydra.searchpath=[pkg://...] would otherwise be globbed.
        kept = " ".join(shlex.quote(a) for a in overrides if not a.startswith("optimizer.lr="))
        print(f"lowest smoothed loss at lr {lowest:.3g}; suggested optimizer.lr={suggested:.3g}"
              " (where the loss fell fastest)")
        print(f"plot: {out / 'lr_find.png'}  data: {out / 'lr_find.csv'}")
        print(f"train with: trainer {kept + ' ' if kept else ''}optimizer.lr={suggested:.3g}")


if __name__ == "__main__":
    main()
