"""AdaScale against the baselines of its paper: one schedule at any batch.

    python bench/adascale.py [--seeds 3] [--threads 2] [--part linreg|mnist|throughput|both]

Two studies, as in Johnson et al. (ICML 2020): every row trains with ONE schedule written for
the base batch M0, at a global batch S x M0.

- Linear regression (recipe=linreg: y = 2x + 1 + N(0, 1), plain SGD, lr 0.1 with cosine decay
  over 5 base-batch epochs, M0 = 8): S in {1, 4, 16, 64} under AdaScale (S micro-batches of
  M0 per step, 2 at S = 1) and under the linear scaling rule (lr x S). Final test MSE, and its
  ratio to S = 1 (goal: within 5%). Near the stability limit (lr x S > 1 on this problem)
  linear scaling diverges where AdaScale's gain, which falls back when the gradient's signal
  grows, keeps it converging.
- MNIST (recipe=mnist: the MLP, SGD momentum 0.9, lr 0.05 constant, 10 epochs at M0 = 128):
  S in {4, 16} (batches 512 and 2048), every row with trainer.accumulate = S (micro-batches
  of 128, the paper's S base-batch gradients, and the same work per step in every row):
  AdaScale (10 base-batch epochs of scale-invariant progress); linear scaling + 1 epoch warmup
  with the same budget in base-batch epochs (10 epochs: the paper's baseline); linear scaling
  + warmup for as many epochs as AdaScale took (its mean rounded up: the same steps and
  samples, the fair baseline); the square-root rule (10 epochs). Median test accuracy over the
  seeds, its range, the gap to the base's median (goal: AdaScale within 0.3 points), epochs,
  steps, training seconds and samples/s (the rows at one accumulation are comparable: the
  AdaScale rows pay its per-step all-reduce and host read).

- Throughput (``--part throughput``): samples/s of 100-step MNIST runs at S = 4 and 16 with
  AdaScale on and off (the linear rule) at the same accumulation, alternating, median of
  ``--seeds`` runs each (goal: AdaScale within 5%); and with B_simple off, for its own cost.

Data: real MNIST from $TRAINER_DATA_DIR/mnist when present, else synthetic files (then the
MNIST accuracies mean nothing; the script says which it used).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import mnist_root, print_table, train_or_diverged  # noqa: E402
from bench.large_batch import run as mnist_run  # noqa: E402
from trainer.config import compose_config  # noqa: E402

LINREG_BASE, MNIST_BASE = 8, 128


def linreg_run(out: Path, scale: int, rule: str, seed: int) -> dict | None:
    """One linear-regression run, or None when it diverged (the trainer stops at a NaN/inf
    loss)."""
    accumulate = max(scale, 2) if rule == "adascale" else 1
    cfg = compose_config(
        "recipe=linreg", "~callbacks.early_stopping", "optimizer.lr=0.1", "schedule=cosine",
        "trainer.epochs=5", f"data.batch_size={LINREG_BASE * scale}",
        f"optimizer.base_batch_size={LINREG_BASE}", f"optimizer.scale_lr={rule}",
        f"trainer.accumulate={accumulate}", f"trainer.seed={seed}", "trainer.resume=null",
        "trainer.log_every=100000", "trainer.eval_every=0", "logger.progress_bar=false",
        "logger.tensorboard=false", "dist.threads_per_worker=null")
    return train_or_diverged(cfg, out)


def linreg(tmp: Path, seeds: int) -> None:
    rows, base = [], None
    for scale in (1, 4, 16, 64):
        for rule in ("adascale", "linear"):
            runs = [linreg_run(tmp / f"lin_{scale}_{rule}_{s}", scale, rule, s)
                    for s in range(seeds)]
            done = [m for m in runs if m is not None]
            mse = statistics.median(m["test_loss"] for m in done) if done else None
            if scale == 1 and rule == "adascale":
                base = mse
            gains = [m["adascale_mean_gain"] for m in done if m.get("adascale_mean_gain")]
            rows.append([scale, LINREG_BASE * scale, rule,
                         f"{mse:.4f}" if mse is not None else "—",
                         f"{mse / base:.3f}" if mse is not None else "—",
                         f"{statistics.mean(m['steps'] for m in done):,.0f}" if done else "—",
                         f"{statistics.mean(m['epochs'] for m in done):.1f}" if done else "—",
                         f"{statistics.mean(gains):.2f}" if gains else "—",
                         len(runs) - len(done)])
            print(f"linreg S={scale} {rule}: {mse}", file=sys.stderr, flush=True)
    print(f"\nLinear regression (recipe=linreg), base batch {LINREG_BASE}, lr 0.1 cosine over 5 "
          f"base-batch epochs, median of {seeds} seed(s)")
    print_table(["S", "global batch", "rule", "test MSE", "vs S=1", "steps", "epochs",
                 "mean gain", "diverged"], rows)


def mnist(tmp: Path, seeds: int) -> None:
    root, source = mnist_root(tmp)
    todo = [("base: batch 128, SGD momentum", 128, (), 10)]
    for scale in (4, 16):
        batch = MNIST_BASE * scale
        big = (f"data.batch_size={batch}", f"optimizer.base_batch_size={MNIST_BASE}",
               f"trainer.accumulate={scale}")
        linear = (*big, "optimizer.scale_lr=linear", "schedule.warmup_epochs=1")
        todo += [(f"{batch}: AdaScale", batch, (*big, "optimizer.scale_lr=adascale"), 10),
                 (f"{batch}: linear + warmup, 10 epochs", batch, linear, 10),
                 (f"{batch}: sqrt, 10 epochs", batch, (*big, "optimizer.scale_lr=sqrt"), 10)]
    results = []
    while todo:
        name, batch, overrides, epochs = todo.pop(0)
        runs = [mnist_run(root, tmp / f"m{len(results)}_{s}", epochs, s, overrides)
                for s in range(seeds)]
        done = [m for m in runs if m is not None]
        results.append((name, batch, done, len(runs) - len(done)))
        accs = " ".join(f"{100 * m['test_accuracy']:.2f}" for m in done)
        print(f"{name}: {accs}", file=sys.stderr, flush=True)
        if name.endswith("AdaScale") and done:
            # The fair baseline: the fixed rule given the steps (and samples) AdaScale took.
            more = math.ceil(statistics.mean(m["epochs"] for m in done) - 1e-9)
            linear = tuple(o for o in overrides if not o.startswith("optimizer.scale_lr"))
            todo.insert(1, (f"{batch}: linear + warmup, {more} epochs (AdaScale's steps)",
                            batch, (*linear, "optimizer.scale_lr=linear",
                                    "schedule.warmup_epochs=1"), more))
    base = statistics.median(100 * m["test_accuracy"] for m in results[0][2])
    rows = []
    for name, batch, done, diverged in results:
        accs = [100 * m["test_accuracy"] for m in done]
        gains = [m["adascale_mean_gain"] for m in done if m.get("adascale_mean_gain")]
        mean = (lambda key, done=done: statistics.mean(m[key] for m in done))  # noqa: E731
        rows.append([
            name, batch, f"{statistics.median(accs):.2f}" if accs else "—",
            f"{min(accs):.2f}-{max(accs):.2f}" if accs else "—",
            f"{statistics.median(accs) - base:+.2f}" if accs else "—",
            f"{mean('epochs'):.1f}" if done else "—", f"{mean('steps'):,.0f}" if done else "—",
            f"{mean('train_time_s'):.1f}" if done else "—",
            f"{mean('samples_per_sec'):,.0f}" if done else "—",
            f"{statistics.mean(gains):.2f}" if gains else "—", diverged])
    print(f"\nMNIST MLP (recipe=mnist), base batch {MNIST_BASE}, one schedule of 10 base-batch "
          f"epochs, median of {len(results[0][2])} seed(s), data: {source}")
    print_table(["run", "global batch", "median test acc %", "range", "gap (pts)", "epochs",
                 "steps", "train s", "samples/s", "mean gain", "diverged"], rows)


def throughput(tmp: Path, repeats: int) -> None:
    """Samples/s with AdaScale on and off at the same accumulation (the linear rule: the
    same micro-batches, and B_simple measured in both, as by default), runs alternating so
    that both see the same machine; the median of ``repeats`` runs of 100 steps each."""
    root, source = mnist_root(tmp)
    rules = {"AdaScale": ("optimizer.scale_lr=adascale",),
             "linear rule": ("optimizer.scale_lr=linear",),
             "linear rule, B_simple off": ("optimizer.scale_lr=linear",
                                           "trainer.noise_scale=never")}
    rows = []
    for scale in (4, 16):
        batch = MNIST_BASE * scale
        common = (f"data.batch_size={batch}", f"optimizer.base_batch_size={MNIST_BASE}",
                  f"trainer.accumulate={scale}", "trainer.max_steps=100", "trainer.eval_every=0",
                  "trainer.test=false")
        rates: dict[str, list[float]] = {name: [] for name in rules}
        for r in range(repeats):
            for name, own in rules.items():
                m = mnist_run(root, tmp / f"t{scale}_{r}_{len(rates[name])}_{name[:3]}", 30, 0,
                              (*common, *own))
                rates[name].append(m["samples_per_sec"])
        off = statistics.median(rates["linear rule"])
        rows += [[scale, batch, name, f"{statistics.median(v):,.0f}",
                  f"{statistics.median(v) / off:.3f}"] for name, v in rates.items()]
    print(f"\nThroughput, MNIST MLP, accumulation S (micro-batches of {MNIST_BASE}), 100 steps, "
          f"median of {repeats} alternating runs, data: {source}")
    print_table(["S", "global batch", "rule", "samples/s", "vs linear rule"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--part", choices=("linreg", "mnist", "throughput", "both"),
                        default="both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("linreg", "both"):
            linreg(Path(tmp), args.seeds)
        if args.part in ("mnist", "both"):
            mnist(Path(tmp), args.seeds)
        if args.part in ("throughput", "both"):
            throughput(Path(tmp), args.seeds)


if __name__ == "__main__":
    main()
