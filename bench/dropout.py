"""The cost of per-sample dropout masks (trainer.dropout_masks=per_sample vs per_rank).

    python bench/dropout.py [--steps 300] [--repeats 5] [--threads 2]

Three shipped models with dropout, each trained for N steps through the real loop twice per
repeat, once with each setting, in alternating order so drift hits both: the MNIST MLP
(784-512-512-10, model.dropout=0.2, batch 128), the ASL CNN (dropout 0.2 and 0.3, batch 32)
and the headline LSTM (dropout 0.1, batch 128). Times are the run's own training seconds
(evaluation and checkpoints excluded); the table reports the median ratio per model.
Data: real MNIST from $TRAINER_DATA_DIR/mnist when present, else synthetic files of its
size; the ASL and headline recipes' generated offline files (the model's cost does not depend
on what the pixels or words are).
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import mnist_root, print_table, timing_args  # noqa: E402
from trainer.config import compose_config  # noqa: E402
from trainer.engine.build import build_run  # noqa: E402
from trainer.engine.loop import fit  # noqa: E402
from trainer.parallel.backends.base import Backend  # noqa: E402


def models(mnist: Path) -> dict[str, list[str]]:
    return {
        "MNIST MLP (p 0.2, batch 128)": [
            "recipe=mnist", f"data.root={mnist}", "data.download=false", "model.dropout=0.2"],
        "ASL CNN (p 0.2/0.3, batch 32)": ["recipe=asl_cnn", "data.synthetic=true"],
        "headline LSTM (p 0.1, batch 128)": [
            "recipe=headlines", "data.synthetic=true", "data.batch_size=128"],
    }


def train_seconds(overrides: list[str], masks: str, steps: int, out: Path) -> float:
    cfg = compose_config(
        *overrides, f"trainer.dropout_masks={masks}", f"trainer.max_steps={steps}",
        "trainer.log_every=50", "logger.progress_bar=false", "logger.tensorboard=false",
        "logger.sample_predictions=0", "dist.threads_per_worker=null",
    )
    with contextlib.redirect_stdout(io.StringIO()):
        return fit(build_run(cfg, out, Backend(torch.device("cpu"))))["train_time_s"]


def main() -> None:
    args = timing_args(__doc__, steps=300)

    with tempfile.TemporaryDirectory() as tmp:
        root, source = mnist_root(Path(tmp))
        rows = []
        for name, overrides in models(root).items():
            ratios, base, ours = [], [], []
            for rep in range(args.repeats):
                order = ("per_rank", "per_sample") if rep % 2 == 0 else ("per_sample", "per_rank")
                seconds = {m: train_seconds(overrides, m, args.steps,
                                            Path(tmp) / f"{name[:4]}{rep}{m}") for m in order}
                base.append(seconds["per_rank"])
                ours.append(seconds["per_sample"])
                ratios.append(seconds["per_sample"] / seconds["per_rank"])
            ms = 1000 / args.steps
            rows.append([name, f"{statistics.median(base) * ms:.2f}",
                         f"{statistics.median(ours) * ms:.2f}",
                         f"{statistics.median(ratios):.3f}"])
        print(f"{args.steps} training steps per run, {args.repeats} repeats, {args.threads} "
              f"threads, MNIST data: {source}, torch {torch.__version__}, {os.cpu_count()} CPUs")
        print_table(["model", "per_rank ms/step", "per_sample ms/step",
                     "median ratio per_sample / per_rank"], rows)


if __name__ == "__main__":
    main()
