"""trainer.compile=true against plain eager: training samples/s of three recipes' models.

    python bench/compile.py                 # MNIST MLP, ASL CNN, headline LSTM; 1 process

Each row runs the recipe twice per round, compiled and eager, alternated over --repeats rounds,
--steps steps each, in one process with every CPU (real MNIST and the real ASL sample when
present in $TRAINER_DATA_DIR, else their synthetic files; the headlines always synthetic,
which the table says). samples/s is the median of the log lines' rates (every 50 steps)
after the first line, whose window holds the compilation; the wall columns show each run's
whole time, compilation included.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, mnist_root, print_table

BASE = ["logger.progress_bar=false", "logger.tensorboard=false", "logger.sample_predictions=0",
        "trainer.eval_every=0", "trainer.epochs=1000", "trainer.log_every=50"]


def _asl(root: Path) -> tuple[list[str], str]:
    base = Path(os.environ.get("TRAINER_DATA_DIR", ROOT.parent / "shared" / "data"))
    if (base / "sign_mnist").is_dir():
        return [f"data.root={base / 'sign_mnist'}"], "real 250-row sample"
    return ["data.synthetic=true", f"data.synthetic_dir={root / 'asl'}"], "synthetic"


def _run(args: list[str], run_dir: Path, root: Path) -> tuple[float, float]:
    """(samples/s after the first log window, wall seconds) of one run."""
    done = subprocess.run([sys.executable, "-m", "trainer", *args, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, cwd=root, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"trainer {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    # The log line's rate covers the steps since the previous line: the first window holds
    # the compilation (and eager's warm-up), the others the steady rate.
    windows = [float(m.group(1).replace(",", "")) for m in
               re.finditer(r"^step \d+/\d+ .* ([\d,]+) samples/s", done.stdout, re.M)]
    if len(windows) < 2:
        raise SystemExit(f"too few log lines in {run_dir}: raise --steps")
    return statistics.median(windows[1:]), json.loads(
        (run_dir / "metrics.json").read_text())["wall_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        mnist, mnist_what = mnist_root(root)
        asl, asl_what = _asl(root)
        models = {
            f"MNIST MLP ({mnist_what.split(' (')[0]})": ["recipe=mnist", f"data.root={mnist}"],
            f"ASL CNN ({asl_what})": ["recipe=asl_cnn", *asl],
            "headline LSTM (synthetic)": ["recipe=headlines", "data.synthetic=true",
                                          f"data.synthetic_dir={root / 'nyt'}"],
        }
        print(f"{os.cpu_count()} CPUs, 1 process, {args.steps} steps, median of "
              f"{args.repeats} alternated rounds")
        rows = []
        for name, recipe in models.items():
            rates: dict[str, list[float]] = {"eager": [], "compiled": []}
            walls: dict[str, list[float]] = {"eager": [], "compiled": []}
            for round_ in range(args.repeats):
                for mode in ("eager", "compiled"):
                    run_dir = root / f"{len(rows)}-{mode}-{round_}"
                    rate, wall = _run([*recipe, *BASE, f"trainer.max_steps={args.steps}",
                                       f"trainer.compile={mode == 'compiled'}"], run_dir, root)
                    rates[mode].append(rate)
                    walls[mode].append(wall)
            eager, compiled = (statistics.median(rates[m]) for m in ("eager", "compiled"))
            rows.append([name, f"{eager:,.0f}", f"{compiled:,.0f}", f"{compiled / eager:.2f}x",
                         f"{statistics.median(walls['eager']):.1f}",
                         f"{statistics.median(walls['compiled']):.1f}"])
        print_table(["model", "eager samples/s", "compiled samples/s", "compiled / eager",
                     "eager wall (s)", "compiled wall (s)"], rows)


if __name__ == "__main__":
    main()
