"""trainer against a hand-written loop, PyTorch Lightning and Hugging Face Accelerate, the same
job under each.

    pip install -e '.[bench]'      # lightning, accelerate (a contender not installed is skipped)
    python bench/peers.py [--epochs 3] [--lockstep-rounds 4] [--rounds 3] [--startup-rounds 6]
                          [--settings 1x1 1x2 2x1]

The job: MNIST MLP 784-512-512-10, SGD lr 0.05 momentum 0.9, global batch 128, real MNIST in
memory (synthetic files of the same format where it is absent), the same initial weights and
batch order everywhere (bench/mnist_job.py), an evaluation and a checkpoint every epoch. Each
contender is a fresh process (``torchrun --standalone`` for several). Settings: PxT = P
processes of T threads each (2x1: DDP over Gloo, one thread per process). Printed: training
samples/s (evaluation and checkpoints excluded) with its ratio to the hand-written loop,
medians over the rounds,

- side by side for the 1-process settings (``--lockstep-rounds``): every contender started at
  once, taking turns of 50 steps on the machine (bench/lockstep.py), each timing its own
  turns, so that the machine's drift cancels out;
- whole runs alternated round by round (``--rounds``; trainer's own metrics.json figure);
- start-up (process start to first step) from 1-step runs of each, one right after the other
  (``--startup-rounds``, 1 process of 1 thread), each round's differences to the hand-written
  loop taken between runs seconds apart (bench/overhead.py says why).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import mnist_root, print_table  # noqa: E402
from bench.side_by_side import (  # noqa: E402
    Job,
    alternate,
    cpu_name,
    differences,
    last_json_line,
    lockstep,
    median,
    trainer_job,
)

HERE = Path(__file__).resolve().parent
PEERS = {"Lightning": ("lightning", "peer_lightning.py"),
         "Accelerate": ("accelerate", "peer_accelerate.py")}


def jobs(root: Path, epochs: int, processes: int, threads: int, steps: int = 0) -> list[Job]:
    """The contenders for one setting, started as a user starts them; ``steps``: only the
    first so many."""
    launch = [sys.executable]
    if processes > 1:
        launch += ["-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={processes}"]
    common = ["--root", str(root), "--epochs", str(epochs), "--threads", str(threads),
              "--out", "{out}", *(["--max-steps", str(steps)] if steps else [])]
    found = [Job("hand-written", [*launch, str(HERE / "plain_loop.py"), *common], last_json_line),
             trainer_job([*launch, "-m", "trainer"], root, epochs, threads, steps)]
    for name, (package, script) in PEERS.items():
        if importlib.util.find_spec(package) is not None:
            found.append(Job(name, [*launch, str(HERE / script), *common], last_json_line))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=["1x1", "1x2", "2x1"])
    parser.add_argument("--lockstep-rounds", type=int, default=4,
                        help="1-process settings side by side, taking turns of 50 steps")
    parser.add_argument("--startup-rounds", type=int, default=6,
                        help="1-step runs of each, alternated, for the start-up (0: none)")
    args = parser.parse_args()

    missing = [package for package, _ in PEERS.values()
               if importlib.util.find_spec(package) is None]
    header, rows, startup, turns = None, [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root, source = mnist_root(Path(tmp))
        if args.startup_rounds:
            got = alternate(jobs(root, args.epochs, 1, 1, steps=1), args.startup_rounds,
                            Path(tmp), "start-up", env={"OMP_NUM_THREADS": "1"})
            startup = _startup_rows(got)
        for setting in args.settings:
            processes, threads = (int(v) for v in setting.split("x"))
            contenders = jobs(root, args.epochs, processes, threads)
            header = ["setting", *(job.name for job in contenders)]
            if processes == 1 and args.lockstep_rounds:
                took = lockstep(contenders, args.lockstep_rounds, Path(tmp), setting,
                                env={"OMP_NUM_THREADS": str(threads)})
                turns.append([f"{processes} process, {threads} thread(s)",
                              *_cells(took, took["hand-written"], lambda sps: sps)])
            if not args.rounds:
                continue
            got = alternate(contenders, args.rounds, Path(tmp), setting,
                            env={"OMP_NUM_THREADS": str(threads)})
            reference = got["hand-written"]
            cells = _cells(got, reference, lambda timing: timing.samples_per_sec)
            label = (f"{processes} process, {threads} thread(s)" if processes == 1 else
                     f"{processes} processes (DDP, Gloo), {threads} thread(s) each")
            rows.append([label, *cells])
    print(f"MNIST MLP 784-512-512-10, SGD, global batch 128, {args.epochs} epochs; data: "
          f"{source}; torch {torch.__version__}; {cpu_name()}, {os.cpu_count()} CPUs")
    if turns:
        print(f"\nSide by side, taking turns every 50 steps ({args.lockstep_rounds} runs of each; "
              "the machine's drift cancels out)")
        print_table(header, turns)
    if rows:
        print(f"\nWhole runs, one after the other, alternated ({args.rounds} rounds)")
        print_table(header, rows)
    if turns or rows:
        print("cells: training samples/s (ratio to the hand-written loop, median and range of "
              "the runs); evaluation and checkpoints excluded on every side")
    if startup:
        print(f"\nStart-up, 1-step runs one right after the other ({args.startup_rounds} rounds, "
              "1 process of 1 thread)")
        print_table(["", *(name for name, _ in startup[0][1:])],
                    [[row[0], *(cell for _, cell in row[1:])] for row in startup])
        print("cells: median seconds (median difference to the hand-written loop, the rounds "
              "paired)")
    if missing:
        print(f"skipped (not installed): {', '.join(missing)}; pip install -e '.[bench]'")


def _startup_rows(got: dict) -> list[list]:
    """Start-up and whole-process seconds of the 1-step runs: ``[label, (name, cell)...]``."""
    reference = got["hand-written"]
    rows = []
    for label, field in (("start-up s (process start to first step)", "startup_s"),
                         ("whole 1-step process s", "process_s")):
        row = [label]
        for name, runs in got.items():
            cell = f"{median([getattr(t, field) for t in runs]):.2f}"
            if name != "hand-written":
                cell += f" ({median(differences(runs, reference, field)):+.2f})"
            row.append((name, cell))
        rows.append(row)
    return rows


def _cells(got: dict, reference: list, samples_per_sec) -> list[str]:
    """Each contender's median samples/s, and but for the reference its ratio to it (median
    and range of the rounds, which pair up: each ran beside the reference)."""
    cells = []
    for name, runs in got.items():
        sps = [samples_per_sec(run) for run in runs]
        if name == "hand-written":
            cells.append(f"{median(sps):,.0f}")
            continue
        r = [mine / samples_per_sec(ref) for mine, ref in zip(sps, reference, strict=True)]
        cells.append(f"{median(sps):,.0f} ({median(r):.3f}x, {min(r):.2f}-{max(r):.2f})")
    return cells


if __name__ == "__main__":
    main()
