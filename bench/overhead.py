"""Framework overhead: the MNIST MLP trained through ``trainer`` vs a hand-written loop.

    python bench/overhead.py [--steps 1000] [--repeats 5] [--threads 2]

Both sides get the same uint8 tensors, global batch, seed, thread count and optimizer, and do
the same work: N SGD steps, a loss read back every 50 steps, and a test-set evaluation plus a
checkpoint written to disk at every epoch end and after the last step. The trainer side runs
its real loop (TensorBoard on, metric accumulation, NaN checks, atomic checkpoints); setup
(imports, data loading, model init) is excluded on both sides. Pairs alternate so drift hits
both; the table reports the median ratio. Data: real MNIST from $TRAINER_DATA_DIR/mnist when
present, else synthetic files in the same format.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import mnist_root, print_table, timing_args  # noqa: E402
from trainer.config import compose_config  # noqa: E402
from trainer.engine.build import build_run  # noqa: E402
from trainer.engine.loop import fit  # noqa: E402
from trainer.parallel.backends.base import Backend  # noqa: E402
from trainer_recipes.mnist.data import MNISTData  # noqa: E402


def hand_written(data: MNISTData, steps: int, batch: int, seed: int, out: Path) -> float:
    """The plain PyTorch loop a user would write; returns seconds from first step to saved file."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x_train, y_train = data.train.inputs, data.train.targets
    per_epoch = len(x_train) // batch

    def evaluate_and_save(step: int) -> None:
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(data.test), 1000):
                logits = model(data.test.inputs[i : i + 1000].float().div_(255))
                correct += int((logits.argmax(1) == data.test.targets[i : i + 1000]).sum())
        model.train()
        state = {"model": model.state_dict(), "optimizer": opt.state_dict()}
        torch.save(state, out / f"hand-{step}.pt")

    start = time.perf_counter()
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(len(x_train))
        idx = perm[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
        x = x_train[idx].float().div_(255)
        loss = F.cross_entropy(model(x), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            loss.item()
        if (step + 1) % per_epoch == 0 or step + 1 == steps:
            evaluate_and_save(step + 1)
    return time.perf_counter() - start


def through_trainer(root: Path, steps: int, batch: int, seed: int, out: Path) -> float:
    cfg = compose_config(
        "recipe=mnist", f"data.root={root}", "data.download=false", f"data.batch_size={batch}",
        f"trainer.max_steps={steps}", f"trainer.seed={seed}", "trainer.log_every=50",
        "logger.progress_bar=false", "logger.sample_predictions=16",
        "logger.tensorboard=true", "dist.threads_per_worker=null",
    )
    run = build_run(cfg, out, Backend(torch.device("cpu")))
    with contextlib.redirect_stdout(io.StringIO()):  # printed, as always, but not on screen
        start = time.perf_counter()
        fit(run)
        return time.perf_counter() - start


def main() -> None:
    args = timing_args(__doc__, steps=1000, batch=128)

    with tempfile.TemporaryDirectory() as tmp:
        root, source = mnist_root(Path(tmp))
        data = MNISTData(str(root), download=False)
        rows, ratios = [], []
        for rep in range(args.repeats):
            out = Path(tmp) / f"run{rep}"
            out.mkdir()
            hand = hand_written(data, args.steps, args.batch, rep, out)
            ours = through_trainer(root, args.steps, args.batch, rep, out / "trainer")
            ratios.append(ours / hand)
            rows.append([rep, f"{hand:.3f}", f"{ours:.3f}", f"{ours / hand:.3f}"])
        print(f"MNIST MLP 784-512-512-10, {args.steps} steps at batch {args.batch}, "
              f"{args.threads} threads, data: {source}, torch {torch.__version__}, "
              f"{os.cpu_count()} CPUs")
        print_table(["repeat", "hand-written s", "trainer s", "ratio"], rows)
        print(f"median ratio trainer / hand-written: {statistics.median(ratios):.3f} "
              f"(target <= 1.03)")


if __name__ == "__main__":
    main()
