"""Helpers shared by the benchmarks: where the MNIST files are, a quiet training run that may
diverge, and a plain-text table."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from trainer_recipes.mnist.synthetic import write_fake_mnist

ROOT = Path(__file__).resolve().parents[1]


def train_or_diverged(cfg, out: Path) -> dict | None:
    """``trainer.tools.train.train(cfg, out)`` with its console output dropped: the run's
    metrics, or None when it diverged (the trainer stops at a NaN or inf loss)."""
    import contextlib
    import io

    from trainer.errors import UserError
    from trainer.tools.train import train

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return train(cfg, out)
        except UserError as exc:
            if "loss is nan" not in str(exc) and "loss is inf" not in str(exc):
                raise
            return None


def mnist_root(scratch: Path) -> tuple[Path, str]:
    """Real MNIST from $TRAINER_DATA_DIR (or ../shared/data), else synthetic files of its size."""
    base = Path(os.environ.get("TRAINER_DATA_DIR", ROOT.parent / "shared" / "data"))
    if (base / "mnist" / "train-images-idx3-ubyte.gz").exists():
        return base / "mnist", f"real MNIST ({base / 'mnist'})"
    return write_fake_mnist(scratch / "mnist", 60000, 10000), "synthetic MNIST-format files"


def timing_args(doc: str, steps: int, **extra: type) -> argparse.Namespace:
    """--steps, --repeats, --threads (and ``extra`` int options) of a timing benchmark; sets
    torch's thread count."""
    import torch

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--steps", type=int, default=steps)
    for name, default in extra.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    line = "+".join("-" * (w + 2) for w in widths)
    print("+" + line + "+")
    for i, row in enumerate(cells):
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if i == 0:
            print("+" + line + "+")
    print("+" + line + "+")
