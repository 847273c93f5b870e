"""The hand-written MNIST loop that bench/overhead.py and bench/peers.py hold trainer against.

    python bench/plain_loop.py --root DIR [--epochs 3] [--batch 128] [--threads 1] [--out DIR]

What a user writes without a framework, and nothing more: MNIST's IDX files read into uint8
tensors, the MLP 784-512-512-10, SGD (lr 0.05, momentum 0.9); each epoch one shuffled
permutation (the one trainer draws, so that both sides make the same updates) cut into batches
gathered from the in-memory tensors (``index_select``: 0.05 ms a batch here where ``x[idx]``
takes 0.16 ms; trainer is held to the faster loop), ``zero_grad(set_to_none=True)``, forward,
backward, step, the loss read and printed every 50 steps; at each epoch end a test-set
evaluation and a checkpoint (model and optimizer). It imports nothing from trainer. The last
line printed is JSON: training samples/s (the steps alone, evaluation and checkpoints
excluded, as trainer's metrics.json counts them), training seconds, and ``startup_s``, process
start to the first step.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def process_age() -> float:
    """Seconds since this process started (Linux /proc, 10 ms ticks), as trainer measures it."""
    ticks = os.sysconf("SC_CLK_TCK")
    started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    return float(Path("/proc/uptime").read_text().split()[0]) - started


def read_idx(path: Path) -> torch.Tensor:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape).copy())


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffle trainer draws for (seed, epoch): both sides then take the same path through
    training, which matters for speed too (denormal floats slow the CPU's arithmetic as the
    weights settle: 9% by the 6th epoch here, unless torch.set_flush_denormal is on)."""
    words = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))
    return torch.randperm(n, generator=generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("plain-loop"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    x_train = read_idx(args.root / "train-images-idx3-ubyte.gz")
    y_train = read_idx(args.root / "train-labels-idx1-ubyte.gz").long()
    x_test = read_idx(args.root / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(args.root / "t10k-labels-idx1-ubyte.gz").long()
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    args.out.mkdir(parents=True, exist_ok=True)
    per_epoch = len(x_train) // args.batch
    steps = args.max_steps or per_epoch * args.epochs

    startup = process_age()
    train_seconds, step = 0.0, 0
    while step < steps:
        started = time.perf_counter()
        order = epoch_order(len(x_train), args.seed, step // per_epoch)
        for i in range(min(per_epoch, steps - step)):
            idx = order[i * args.batch : (i + 1) * args.batch]
            x = x_train.index_select(0, idx).float().div_(255)
            loss = F.cross_entropy(model(x), y_train.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 50 == 0:
                print(f"step {step} loss {loss.item():.4f}")
        train_seconds += time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x_test[i : i + 1000].float().div_(255)).argmax(1)
                               == y_test[i : i + 1000]).sum())
                          for i in range(0, len(x_test), 1000))
        model.train()
        print(f"step {step} test accuracy {correct / len(x_test):.4f}")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()},
                   args.out / "checkpoint.pt")
    print(json.dumps({"samples_per_sec": step * args.batch / train_seconds,
                      "train_time_s": train_seconds, "startup_s": startup,
                      "test_accuracy": correct / len(x_test)}))


if __name__ == "__main__":
    main()
