"""Framework overhead as a user sees it: the ``trainer`` command against a hand-written loop.

    python bench/overhead.py [--epochs 3] [--lockstep-rounds 4] [--rounds 5] [--threads 1 2]
                             [--startup-rounds 10] [--set KEY=VALUE ...] [--against-itself]

Both sides train the MNIST MLP 784-512-512-10 (SGD lr 0.05 momentum 0.9, batch 128) for the
same epochs as separate processes started the way a user starts them: ``trainer recipe=mnist``
with its default logging (TensorBoard scalars every 50 steps, sample predictions, evaluation
and a checkpoint every epoch, metrics.json) and bench/plain_loop.py (the same work written by
hand, see there). Reported per thread count:

- training samples/s side by side (``--lockstep-rounds``): both processes started at once,
  taking turns of 50 steps each on the machine (bench/lockstep.py; trainer takes its turns in
  a callback, as a user adds one), each timing its own turns, evaluation and checkpoints
  excluded. A shared VM's speed drifts 10-20% over seconds; taking turns cancels that, where
  whole runs one after the other differ by more than the few percent looked for;
- whole runs alternated (``--rounds``): training samples/s (the steps alone, evaluation and
  checkpoints excluded on both sides: trainer's own ``samples_per_sec`` in metrics.json; its
  log lines count as training), whole-process seconds (interpreter start to exit, measured
  from outside) and start-up (process start to the first step, as each process measures it:
  ``startup_s``);
- start-up (``--startup-rounds``, once, at the first thread count): both sides run for one
  step, one right after the other, round after round, each round's difference taken between
  two runs seconds apart (a 3-epoch run takes long enough for the machine to change pace
  between the two start-ups it pairs).

``--against-itself`` runs trainer against trainer: the ratio's own spread on this machine (the
first turn goes to each side in turn, so an even number of rounds balances who starts).

Data: real MNIST from $TRAINER_DATA_DIR/mnist (or ../shared/data) when present, else
synthetic files in the same format. Done-when (issue 16): samples/s ratio >= 0.98 at 1 and 2
threads and start-up within 0.3 s of the plain loop.
"""

from __future__ import annotations

import argparse
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
    ratios,
    trainer_command,
    trainer_job,
)

HERE = Path(__file__).resolve().parent


def jobs(root: Path, epochs: int, threads: int, extra: list[str],
         itself: bool = False, steps: int = 0) -> list[Job]:
    """The reference (the hand-written loop, or with ``itself`` trainer again: the method's own
    noise and bias), then trainer; ``steps``: only the first so many."""
    plain = Job("hand-written", [sys.executable, str(HERE / "plain_loop.py"), "--root", str(root),
                                 "--epochs", str(epochs), "--threads", str(threads),
                                 "--out", "{out}", *(["--max-steps", str(steps)] if steps else [])],
                last_json_line)
    ours = trainer_job(trainer_command(), root, epochs, threads, steps, tuple(extra))
    if itself:
        plain = Job("trainer again", ours.command, ours.result, ours.lockstep)
    return [plain, ours]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="whole runs, alternated")
    parser.add_argument("--lockstep-rounds", type=int, default=4,
                        help="runs side by side taking turns (0: none)")
    parser.add_argument("--turn-steps", type=int, default=50, help="steps per turn")
    parser.add_argument("--startup-rounds", type=int, default=10,
                        help="1-step runs of each, alternated, for the start-up (0: none)")
    parser.add_argument("--against-itself", action="store_true",
                        help="trainer against trainer: how far the method's ratio strays from 1")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides for the trainer side (what your config costs)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root, source = mnist_root(Path(tmp))

        def contenders(threads: int, steps: int = 0) -> list[Job]:
            return jobs(root, args.epochs, threads, args.set, args.against_itself, steps)

        reference = contenders(1)[0].name
        rows, startups, turns, startup = [], [], [], None
        if args.startup_rounds:
            got = alternate(contenders(args.threads[0], steps=1), args.startup_rounds,
                            Path(tmp), "start-up")
            plain, ours = got[reference], got["trainer"]
            start = differences(ours, plain, "startup_s")
            startup = [f"{median([t.startup_s for t in plain]):.2f}",
                       f"{median([t.startup_s for t in ours]):.2f}",
                       f"{median(start):+.2f} ({min(start):+.2f} to {max(start):+.2f})",
                       f"{median([t.process_s for t in plain]):.2f}",
                       f"{median([t.process_s for t in ours]):.2f}"]
            startups = [median(start)]
        for threads in args.threads:
            if args.lockstep_rounds:
                got = lockstep(contenders(threads), args.lockstep_rounds,
                               Path(tmp), f"{threads}t", args.turn_steps)
                plain, ours = got[reference], got["trainer"]
                r = [o / p for o, p in zip(ours, plain, strict=True)]
                turns.append([threads, f"{median(plain):,.0f}", f"{median(ours):,.0f}",
                              f"{median(r):.3f} ({min(r):.3f}-{max(r):.3f})"])
            if not args.rounds:
                continue
            got = alternate(contenders(threads), args.rounds, Path(tmp), f"{threads}t")
            plain, ours = got[reference], got["trainer"]
            r = ratios(ours, plain)
            process = differences(ours, plain, "process_s")
            start = differences(ours, plain, "startup_s")
            if not args.startup_rounds:
                startups.append(median(start))
            rows.append([
                threads,
                f"{median([t.samples_per_sec for t in plain]):,.0f}",
                f"{median([t.samples_per_sec for t in ours]):,.0f}",
                f"{median(r):.3f} ({min(r):.3f}-{max(r):.3f})",
                f"{median([t.process_s for t in plain]):.2f}",
                f"{median([t.process_s for t in ours]):.2f} ({median(process):+.2f})",
                f"{median([t.startup_s for t in plain]):.2f}",
                f"{median([t.startup_s for t in ours]):.2f} ({median(start):+.2f})",
            ])
    print(f"MNIST MLP 784-512-512-10, batch 128, {args.epochs} epochs; data: {source}; "
          f"torch {torch.__version__}; {cpu_name()}, {os.cpu_count()} CPUs")
    if turns:
        print(f"\nTraining side by side, taking turns every {args.turn_steps} steps "
              f"({args.lockstep_rounds} runs of each; the machine's drift cancels out)")
        print_table(["threads", f"{reference} samples/s", "trainer samples/s",
                     "ratio (runs min-max)"], turns)
    if startup:
        print(f"\nStart-up, 1-step runs one right after the other ({args.startup_rounds} rounds, "
              f"{args.threads[0]} thread(s))")
        print_table([f"{reference} start-up s", "trainer start-up s", "difference (min to max)",
                     f"{reference} 1-step process s", "trainer 1-step process s"], [startup])
    if rows:
        print(f"\nWhole runs, one after the other, alternated ({args.rounds} rounds)")
        print_table(["threads", f"{reference} samples/s", "trainer samples/s",
                     "ratio (rounds min-max)", f"{reference} process s", "trainer process s",
                     f"{reference} start-up s", "trainer start-up s"], rows)
    print(f"ratio: trainer / {reference} training samples/s, median (target >= 0.98)"
          + ("; start-up: process start to first step (target: within 0.3 s), difference "
             f"{max(startups):+.2f} s" if startups else ""))


if __name__ == "__main__":
    main()
