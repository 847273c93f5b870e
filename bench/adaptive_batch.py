"""The adaptive batch size against measurement and against fixed batches (issue 30).

    python bench/adaptive_batch.py [--part time|throughput|both] [--seeds 3] [--epochs 10]
                                   [--target 98.0] [--repeats 3] [--threads 2]

- Time to accuracy (``--part time``, the default): the MNIST MLP (recipe=mnist: SGD momentum
  0.9, lr 0.05, 10 epochs) until its VALIDATION accuracy first reaches ``--target`` (the
  held-out 1/12 of the training rows, evaluated every quarter epoch's worth of samples; the
  test split is reported once, at the end), wall-clock seconds from the run's start (its
  evaluations and, for the controller, its profile included). Rows: fixed batch 128 (the
  recipe); fixed 256 ... 1,024 as `sweep=mnist_batch` runs them (same lr); Smith et al.'s
  `schedule=increase_batch` (128, doubled at epochs 3, 6, 8); `data.batch_size=auto` (M0
  128, at most 4,096, AdaScale) with 2 micro-batches per step (every step measured, batch
  128 running as 2 x 64), and with one (every 4th step split in two halves and measured,
  `optimizer.adascale_measure_every`). Seeds interleaved (seed 0 of every row, then seed 1,
  ...); medians. Goals (the last row):
  adaptive <= 0.85x fixed 128's time, <= 1.10x the best fixed batch's, <= 1.1x
  increase_batch's, final test accuracy within 0.3 points of fixed 128's, at most 6 changes
  of batch.

- Throughput model (trainer/large_batch/goodput.py): the MNIST MLP (recipe=mnist) run at
  fixed global batches 32 ... 4,096 (short runs of `trainer.max_steps` steps, training
  samples/s from metrics.json: evaluation and checkpoints excluded), the runs of all batches
  interleaved and each batch's median over ``--repeats``; the model fitted to the step times
  at the ``--fit`` batches only (what a controller's start-up profile would measure) predicts
  every batch's samples/s. Goal: within 10% over 32 ... 4,096.

Data: real MNIST from $TRAINER_DATA_DIR/mnist when present, else synthetic files of its size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import mnist_root, print_table  # noqa: E402
from bench.large_batch import run as mnist_run  # noqa: E402
from trainer.callbacks import Callback  # noqa: E402
from trainer.large_batch.goodput import ThroughputModel, step_shape  # noqa: E402

BATCHES = (32, 64, 128, 256, 512, 1024, 2048, 4096)


def steps_for(batch: int) -> int:
    """About 40,000 samples' worth, between 30 and 300 steps."""
    return max(30, min(300, 40000 // batch))


def throughput(tmp: Path, repeats: int, fit: list[int]) -> None:
    root, source = mnist_root(tmp)
    rates: dict[int, list[float]] = {b: [] for b in BATCHES}
    for r in range(repeats):
        for batch in BATCHES:
            m = mnist_run(root, tmp / f"b{batch}_{r}", 30, 0, (
                f"data.batch_size={batch}", f"trainer.max_steps={steps_for(batch)}",
                "trainer.eval_every=0", "trainer.test=false", "trainer.noise_scale=never"))
            rates[batch].append(m["samples_per_sec"])
            print(f"batch {batch}: {m['samples_per_sec']:,.0f} samples/s", file=sys.stderr,
                  flush=True)
    measured = {b: statistics.median(v) for b, v in rates.items()}
    shape = {b: step_shape(b, 1, None) for b in BATCHES}
    model = ThroughputModel.fit([(shape[b], b / measured[b]) for b in fit])
    rows = []
    for b in BATCHES:
        predicted = model.samples_per_second(shape[b])
        rows.append([b, "yes" if b in fit else "", f"{measured[b]:,.0f}", f"{predicted:,.0f}",
                     f"{predicted / measured[b]:.3f}"])
    worst = max(abs(model.samples_per_second(shape[b]) / measured[b] - 1) for b in BATCHES)
    print(f"\nThroughput model, MNIST MLP, 1 worker, median of {repeats} interleaved runs per "
          f"batch, data: {source}\nfitted: alpha {model.alpha * 1e3:.3f} ms per micro-batch, "
          f"beta {model.beta * 1e6:.2f} us per sample, sync {model.sync * 1e3:.3f} ms per "
          f"step; worst error {worst:.1%} (goal: within 10%)")
    print_table(["global batch", "fitted on", "measured samples/s", "predicted samples/s",
                 "predicted / measured"], rows)


class EvalClock(Callback):
    """Each evaluation's (seconds since the run started training, validation accuracy, global
    batch) into metrics.json as ``eval_clock``: when a run first reached the target."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seen: list[tuple[float, float, int]] = []

    def on_fit_start(self, run) -> None:
        self.start = time.perf_counter()

    def on_eval_end(self, run, metrics) -> None:
        if "val/accuracy" in metrics:
            self.seen.append((time.perf_counter() - self.start, float(metrics["val/accuracy"]),
                              int(run.loader.global_batch_size)))

    def on_fit_end(self, run, metrics) -> None:
        metrics["eval_clock"] = self.seen


QUARTER = 55_000 // 4  # a quarter epoch's training rows (60,000 less 1/12 held out)
ADAPTIVE = ("data.batch_size=auto", "data.batch_size_min=128", "data.batch_size_max=4096",
            "optimizer.scale_lr=adascale")
TIME_ROWS = [  # (name, overrides, eval_every: optimizer steps, or AdaScale's base-batch steps)
    ("fixed 128 (recipe=mnist)", ("data.batch_size=128",), QUARTER // 128),
    ("fixed 256 (sweep=mnist_batch)", ("data.batch_size=256",), QUARTER // 256),
    ("fixed 512 (sweep=mnist_batch)", ("data.batch_size=512",), QUARTER // 512),
    ("fixed 1024 (sweep=mnist_batch)", ("data.batch_size=1024",), QUARTER // 1024),
    ("increase_batch 128 x2 at epochs 3,6,8", ("data.batch_size=128", "schedule=increase_batch",
                                               "schedule.milestones=[3,6,8]",
                                               "schedule.factor=2"), QUARTER // 128),
    ("auto 128-4096 (AdaScale, 2 micro-batches)", (*ADAPTIVE, "trainer.accumulate=2"),
     QUARTER // 128),
    ("auto 128-4096 (AdaScale, every 4th step split)", ADAPTIVE, QUARTER // 128),
]


def time_to_target(tmp: Path, seeds: int, epochs: int, target: float) -> None:
    root, source = mnist_root(tmp)
    found: dict[str, list[dict]] = {name: [] for name, _, _ in TIME_ROWS}
    for seed in range(seeds):
        for i, (name, overrides, every) in enumerate(TIME_ROWS):
            m = mnist_run(root, tmp / f"t{i}_{seed}", epochs, seed, (
                *overrides, f"trainer.eval_every={every}", "trainer.checkpoint_every=0",
                "+callbacks.eval_clock._target_=bench.adaptive_batch.EvalClock"))
            hit = next(((t, b) for t, acc, b in m["eval_clock"] if 100 * acc >= target),
                       (None, None))
            found[name].append({"seconds": hit[0], "test": 100 * m["test_accuracy"],
                                "changes": m.get("batch_changes") or 0,
                                "batch": hit[1], "total": m["wall_time_s"]})
            print(f"seed {seed} {name}: target at {hit[0] and round(hit[0], 1)} s (batch "
                  f"{hit[1]}), test {100 * m['test_accuracy']:.2f}%, "
                  f"{m.get('batch_changes') or 0} changes", file=sys.stderr, flush=True)

    def median(name: str, key: str) -> float | None:
        values = [r[key] for r in found[name] if r[key] is not None]
        return statistics.median(values) if len(values) == len(found[name]) else None

    base = median(TIME_ROWS[0][0], "seconds")
    rows = []
    for name, _, _ in TIME_ROWS:
        t = median(name, "seconds")
        rows.append([name, f"{t:.1f}" if t else "not reached",
                     f"{t / base:.3f}" if t and base else "—",
                     f"{median(name, 'test'):.2f}", f"{median(name, 'total'):.1f}",
                     max(r["changes"] for r in found[name])])
    print(f"\nTime to {target}% validation accuracy, MNIST MLP, {epochs} epochs, 1 worker, "
          f"median of seeds 0-{seeds - 1} (interleaved), data: {source}")
    print_table(["run", f"s to {target}% val", "x fixed 128", "final test acc %",
                 "run s", "batch changes (max)"], rows)
    auto = median(TIME_ROWS[-1][0], "seconds")
    fixed = {name: median(name, "seconds") for name, _, _ in TIME_ROWS[:4]}
    reached = {n: t for n, t in fixed.items() if t}
    grow = median(TIME_ROWS[4][0], "seconds")
    if not (auto and base and reached):
        print("the adaptive run or fixed 128 did not reach the target: no ratios")
        return
    best_name, best = min(reached.items(), key=lambda kv: kv[1])
    gap = median(TIME_ROWS[0][0], "test") - median(TIME_ROWS[-1][0], "test")
    changes = max(r["changes"] for r in found[TIME_ROWS[-1][0]])
    for goal, ok in [
        (f"adaptive / fixed 128 = {auto / base:.3f} (goal <= 0.85)", auto / base <= 0.85),
        (f"adaptive / best fixed ({best_name}) = {auto / best:.3f} (goal <= 1.10)",
         auto / best <= 1.10),
        (f"adaptive / increase_batch = {auto / grow:.3f} (goal <= 1.1)" if grow else
         "increase_batch did not reach the target", bool(grow) and auto / grow <= 1.1),
        (f"final test accuracy {gap:+.2f} points below fixed 128 (goal: within 0.3)",
         gap <= 0.3),
        (f"at most {changes} changes of batch (goal <= 6)", changes <= 6),
    ]:
        print(f"{goal}: {'met' if ok else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["time", "throughput", "both"], default="time")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--target", type=float, default=98.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--fit", type=int, nargs="+", default=[64, 512, 4096],
                        help="the batches the model is fitted on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("time", "both"):
            time_to_target(Path(tmp), args.seeds, args.epochs, args.target)
        if args.part in ("throughput", "both"):
            throughput(Path(tmp), args.repeats, args.fit)


if __name__ == "__main__":
    main()
