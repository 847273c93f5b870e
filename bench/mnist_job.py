"""The MNIST job that bench/plain_loop.py, bench/peer_lightning.py and bench/peer_accelerate.py
each run their own way, and what they share so that only the framework differs: the files
read into tensors, the model and its initial weights, each epoch's order (the one trainer
draws), each worker's rows of a global batch, the evaluation, and the JSON line the harness
reads (bench/side_by_side.py). Nothing here imports trainer.

Under ``torchrun`` (WORLD_SIZE > 1) every global batch of B rows is cut into WORLD_SIZE
consecutive slices, rank r taking the r-th, as trainer does: the same samples, the same
updates.
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

from bench.lockstep import Turns


def process_age() -> float:
    """Seconds since this process started (Linux /proc, 10 ms ticks), as trainer measures it."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def arguments(doc: str) -> argparse.Namespace:
    """The command line every job takes (``--max-steps``: the 1-step runs that time start-up)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128, help="the global batch")
    parser.add_argument("--threads", type=int, default=1, help="per process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=0,
                        help="stop after this many steps (0: every epoch to the end)")
    parser.add_argument("--out", type=Path, default=Path("mnist-job"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def read_idx(path: Path) -> torch.Tensor:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    pixels = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)
    return torch.from_numpy(pixels.copy())


def load(root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train images, train labels, test images, test labels (uint8 images, int64 labels)."""
    return (read_idx(root / "train-images-idx3-ubyte.gz"),
            read_idx(root / "train-labels-idx1-ubyte.gz").long(),
            read_idx(root / "t10k-images-idx3-ubyte.gz"),
            read_idx(root / "t10k-labels-idx1-ubyte.gz").long())


def model(seed: int) -> nn.Module:
    """The MLP 784-512-512-10, initialised as trainer initialises it for this seed."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )


def optimizer(net: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffle trainer draws for (seed, epoch): every side then makes the same updates,
    which matters for speed too (denormal floats slow the CPU's arithmetic as the weights
    settle: 9% by the 6th epoch here, unless torch.set_flush_denormal is on)."""
    words = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))
    return torch.randperm(n, generator=generator)


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def batches(x: torch.Tensor, y: torch.Tensor, global_batch: int, seed: int, epoch: int,
            limit: int = 0):
    """This worker's ``(inputs, labels)`` of each global batch of the epoch (the first
    ``limit`` only, where given), inputs as floats in [0, 1] (``index_select``: 0.05 ms a
    batch here where ``x[idx]`` takes 0.16 ms)."""
    rank, size = world()
    local = global_batch // size
    order = epoch_order(len(x), seed, epoch)
    steps = len(x) // global_batch
    for i in range(min(steps, limit) if limit > 0 else steps):
        idx = order[i * global_batch + rank * local : i * global_batch + (rank + 1) * local]
        yield x.index_select(0, idx).float().div_(255), y.index_select(0, idx)


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    correct = sum(int((net(x[i : i + 1000].float().div_(255)).argmax(1) == y[i : i + 1000]).sum())
                  for i in range(0, len(x), 1000))
    net.train()
    return correct / len(x)


def report(samples: int, train_seconds: float, startup: float, test_accuracy: float,
           turns: Turns | None = None) -> None:
    """The JSON line the harness reads (rank 0's; the other ranks print nothing); under the
    lockstep (bench/lockstep.py) also the samples/s of this process's turns."""
    if world()[0] == 0:
        line = {"samples_per_sec": samples / max(train_seconds, 1e-9),
                "train_time_s": train_seconds, "startup_s": startup,
                "test_accuracy": test_accuracy}
        if turns is not None and turns.seconds() > 0:
            line["lockstep_samples_per_sec"] = samples / turns.seconds()
            line["lockstep_turns"] = turns.turns
        print(json.dumps(line), flush=True)


class Clock:
    """Training seconds: started before an epoch's first step, stopped after its last."""

    def __init__(self) -> None:
        self.total, self._since = 0.0, None

    def start(self) -> None:
        self._since = time.perf_counter()

    def stop(self) -> None:
        if self._since is not None:
            self.total += time.perf_counter() - self._since
            self._since = None
