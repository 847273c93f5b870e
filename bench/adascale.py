"""AdaScale against the baselines of its paper, on the MNIST MLP: one schedule at any batch.

    python bench/adascale.py [--epochs 10] [--seeds 3] [--batches 1024,4096] [--threads 2]

The base: recipe=mnist (SGD momentum 0.9, lr 0.05, constant) at batch M0 = 128 for --epochs
epochs. At each larger global batch B = S x 128, the same recipe and the same --epochs with the
learning rate:

- none: lr as tuned for batch 128 (what `trainer sweep=mnist_batch` shows);
- linear + warmup: lr x S with 1 epoch of gradual warmup (Goyal et al. 2017, the paper's main
  baseline);
- sqrt: lr x sqrt(S);
- AdaScale: lr x each step's gain r in [1, S], the run lasting --epochs base-batch epochs of
  scale-invariant progress (Johnson et al. 2020), from the S micro-batches of 128 of each
  step (trainer.accumulate=S: the paper's S base-batch gradients);
- linear + warmup again, for as many real epochs as AdaScale took (its mean, rounded up): the
  same samples under the fixed rule, to tell the rule's effect from the extra data's.

Prints each row's mean test accuracy over the seeds, its spread and gap to the base, the real
epochs and optimizer steps it took, and AdaScale's mean gain. The paper's claim to check: at
each scale AdaScale stays near the base's accuracy where the fixed rules fall short, in fewer
steps than the base (S / mean gain times the base's epochs). Data: real MNIST from
$TRAINER_DATA_DIR/mnist when present, else synthetic files (then the accuracies mean nothing).
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

from bench.common import mnist_root, print_table  # noqa: E402
from bench.large_batch import run  # noqa: E402

BASE = 128


def rows(batches: list[int]) -> list[tuple[str, int, tuple[str, ...]]]:
    out = [("base: batch 128, SGD momentum", BASE, ())]
    for batch in batches:
        scale = batch // BASE
        big = (f"data.batch_size={batch}", f"optimizer.base_batch_size={BASE}")
        out += [
            (f"{batch}: none (lr as at 128)", batch, big),
            (f"{batch}: linear + 1 epoch warmup", batch,
             (*big, "optimizer.scale_lr=linear", "schedule.warmup_epochs=1")),
            (f"{batch}: sqrt", batch, (*big, "optimizer.scale_lr=sqrt")),
            (f"{batch}: AdaScale", batch,
             (*big, "optimizer.scale_lr=adascale", f"trainer.accumulate={scale}")),
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batches", default="1024,4096")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root, source = mnist_root(Path(tmp))
        todo = [(name, batch, overrides, args.epochs) for name, batch, overrides in rows(batches)]
        while todo:
            name, batch, overrides, epochs = todo.pop(0)
            runs = [run(root, Path(tmp) / f"run{len(results)}_{seed}", epochs, seed, overrides)
                    for seed in range(args.seeds)]
            done = [m for m in runs if m is not None]
            results.append((name, batch, done, len(runs) - len(done)))
            accs = " ".join(f"{100 * m['test_accuracy']:.2f}" for m in done)
            print(f"{name}: {accs} ({len(runs) - len(done)} diverged)", file=sys.stderr,
                  flush=True)
            if name.endswith("AdaScale") and done:
                # The same data as AdaScale used, under the fixed rule: is it the rule or
                # the extra samples?
                more = math.ceil(statistics.mean(m["epochs"] for m in done) - 1e-9)
                fixed = tuple(o for o in overrides if not o.startswith(("optimizer.scale_lr",
                                                                        "trainer.accumulate")))
                todo.insert(0, (f"{batch}: linear + warmup, {more} epochs (AdaScale's data)",
                                batch, (*fixed, "optimizer.scale_lr=linear",
                                        "schedule.warmup_epochs=1"), more))
    base = statistics.mean(100 * m["test_accuracy"] for m in results[0][2])
    table = []
    for name, batch, done, diverged in results:
        accs = [100 * m["test_accuracy"] for m in done]
        gains = [m["adascale_mean_gain"] for m in done if m.get("adascale_mean_gain")]
        table.append([
            name, batch, f"{statistics.mean(accs):.2f}" if accs else "—",
            f"{min(accs):.2f}-{max(accs):.2f}" if accs else "—",
            f"{statistics.mean(accs) - base:+.2f}" if accs else "—",
            f"{statistics.mean(m['epochs'] for m in done):.1f}" if done else "—",
            f"{statistics.mean(m['steps'] for m in done):,.0f}" if done else "—",
            f"{statistics.mean(gains):.2f}" if gains else "—", diverged])
    print(f"MNIST MLP, {args.epochs} (base-batch) epochs per row, seeds 0-{args.seeds - 1}, "
          f"data: {source}, torch {torch.__version__}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs")
    print_table(["run", "global batch", "mean test acc %", "range", "gap (pts)", "epochs",
                 "steps", "mean gain", "diverged"], table)


if __name__ == "__main__":
    main()
