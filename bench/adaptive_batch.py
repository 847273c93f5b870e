"""The adaptive batch size's parts against measurement (issue 30; grows with the controller).

    python bench/adaptive_batch.py [--repeats 3] [--threads 2] [--fit 64 512 4096]

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
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import mnist_root, print_table  # noqa: E402
from bench.large_batch import run as mnist_run  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--fit", type=int, nargs="+", default=[64, 512, 4096],
                        help="the batches the model is fitted on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        throughput(Path(tmp), args.repeats, args.fit)


if __name__ == "__main__":
    main()
