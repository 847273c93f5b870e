"""Data path: the in-memory MNIST loader vs torchvision's MNIST dataset + DataLoader.

    python bench/data.py [--batch 128] [--repeats 3]

Each side produces one shuffled training epoch of float batches in [0, 1] with int64 labels,
ready for the model; samples/s over the epoch, best of the repeats, side by side in one run.
torchvision gets its usual setup (ToTensor, DataLoader with 0 and 2 worker processes).
Uses real MNIST from $TRAINER_DATA_DIR/mnist when present, else synthetic IDX files.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import mnist_root, print_table  # noqa: E402
from trainer.data import InMemoryLoader  # noqa: E402
from trainer.data.memory import prepare_batch  # noqa: E402
from trainer_recipes.mnist.data import MNIST_FILES, MNISTData  # noqa: E402


def in_memory_epoch(root: Path, batch: int, epoch: int) -> tuple[int, float]:
    data = MNISTData(str(root), download=False)
    prepare = partial(prepare_batch, transform=data.transform)
    loader = InMemoryLoader(data.train, batch, seed=0, prepare=prepare)
    start = time.perf_counter()
    seen = sum(len(y) for _, y in loader.epoch(epoch))
    return seen, time.perf_counter() - start


def torchvision_epoch(root: Path, batch: int, workers: int) -> tuple[int, float]:
    from torchvision import transforms
    from torchvision.datasets import MNIST

    dataset = MNIST(str(root), train=True, transform=transforms.ToTensor(), download=False)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
        persistent_workers=False,
    )
    start = time.perf_counter()
    seen = sum(len(y) for _, y in loader)
    return seen, time.perf_counter() - start


def torchvision_layout(source: Path, scratch: Path) -> Path:
    """torchvision reads decompressed files from ROOT/MNIST/raw/."""
    raw = scratch / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in MNIST_FILES.values():
        (raw / stem).write_bytes(gzip.decompress((source / f"{stem}.gz").read_bytes()))
    return scratch / "tv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, source = mnist_root(Path(tmp))
        tv_root = torchvision_layout(root, Path(tmp))
        runs = {
            "trainer in-memory": lambda r: in_memory_epoch(root, args.batch, r),
            "torchvision, 0 workers": lambda r: torchvision_epoch(tv_root, args.batch, 0),
            "torchvision, 2 workers": lambda r: torchvision_epoch(tv_root, args.batch, 2),
        }
        best = {}
        for name, run in runs.items():
            rates = []
            for r in range(args.repeats):
                seen, seconds = run(r)
                rates.append(seen / seconds)
            best[name] = max(rates)
        base = best["trainer in-memory"]
        rows = [
            [name, f"{rate:,.0f}", f"{base / rate:.1f}x" if rate != base else "1.0x"]
            for name, rate in best.items()
        ]
        print(f"one MNIST training epoch at batch {args.batch}, data: {source}, "
              f"torch {torch.__version__}")
        print_table(["data path", "samples/s", "in-memory speed-up"], rows)
        print("target: in-memory >= 5x torchvision")


if __name__ == "__main__":
    main()
