"""What the cluster costs: work lost to a preemption, and horovodrun's speed next to torchrun's.

    python bench/cluster.py            # MNIST MLP (real MNIST when present), 2 workers

Table 1, preemption: a run is stopped after --stop-at steps, the way a cluster stops it. With
the handler (SIGTERM, what SLURM/Kubernetes/torchrun send) the run checkpoints the step it is
on; without it (SIGKILL: what a SIGTERM did before the handler existed, and what any process
without one suffers) the resumed run restarts from the last checkpoint, the epoch end at the
default trainer.checkpoint_every=0. "Steps redone" is what the resumed run trains again.

Table 2, throughput: training samples/s (the trainer's own, evaluation and checkpoints
excluded) of the same job on 2 workers under torchrun and under horovodrun, with the thread
default (the node's CPUs / its workers) and with torch's own default that horovodrun workers
used to keep (every core each), and under elastic horovodrun (dist.elastic=true: the state
committed to memory at every log line, every 50 steps). Alternated over --repeats rounds; the
median is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, mnist_root, print_table

BIN = Path(sys.executable).parent
BASE = ["recipe=mnist", "logger.progress_bar=false", "logger.tensorboard=false",
        "logger.sample_predictions=0", "trainer.eval_every=0"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(PATH=f"{BIN}:{env['PATH']}", PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    return env


def _steps_of(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*.pt"))


def preemption(root: Path, data: Path, stop_at: int) -> list[list]:
    rows = []
    for how, sig in (("SIGTERM, handler (now)", signal.SIGTERM),
                     ("SIGKILL / no handler (before)", signal.SIGKILL)):
        run_dir = root / f"stop-{sig}"
        args = [sys.executable, "-m", "trainer", *BASE, f"data.root={data}",
                "trainer.log_every=1", "dist.threads_per_worker=1", f"hydra.run.dir={run_dir}"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, env=_env(), cwd=root)
        step = 0
        while step < stop_at:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("step "):
                step = int(line.split()[1].split("/")[0])
        started = time.perf_counter()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=300)
        stopped_in = time.perf_counter() - started
        # The step it really stopped after: the handler says; a killed run trained at least
        # up to the last step it printed.
        said = [line for line in out.splitlines() if line.startswith("stopped by")]
        trained = int(said[0].split()[5].rstrip(";")) if said else step
        saved = _steps_of(run_dir)
        resumed_from = saved[-1] if saved else 0
        redone = trained - resumed_from
        rows.append([how, trained, proc.returncode, resumed_from,
                     redone if said else f">= {redone}", f"{stopped_in:.2f}"])
    return rows


def _samples_per_sec(command: list[str], run_dir: Path, root: Path) -> float:
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), cwd=root,
                          timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{done.stderr[-2000:]}")
    return json.loads((run_dir / "metrics.json").read_text())["samples_per_sec"]


def _two_slots(root: Path) -> Path:
    """A host-discovery script that always answers two slots on this machine."""
    script = root / "two_slots.sh"
    script.write_text("#!/bin/sh\necho localhost:2\n")
    script.chmod(0o755)
    return script


def throughput(root: Path, data: Path, steps: int, repeats: int) -> list[list]:
    cores = os.cpu_count()
    job = [*BASE, f"data.root={data}", f"trainer.max_steps={steps}", "trainer.log_every=50"]
    setups = {
        "torchrun, 2 workers": lambda d: [str(BIN / "torchrun"), "--standalone",
                                          "--nproc-per-node=2", "-m", "trainer", *job,
                                          f"hydra.run.dir={d}"],
        "horovodrun, thread default (now)": lambda d: [
            "bash", str(ROOT / "launch" / "horovodrun.sh"), "2", *job, f"hydra.run.dir={d}"],
        f"horovodrun, {cores} threads each (before)": lambda d: [
            "bash", str(ROOT / "launch" / "horovodrun.sh"), "2", *job,
            f"dist.threads_per_worker={cores}", f"hydra.run.dir={d}"],
        "horovodrun elastic (commit every 50 steps)": lambda d: [
            str(BIN / "horovodrun"), "--gloo", "-np", "2", "--min-np", "1", "--max-np", "2",
            "--host-discovery-script", str(_two_slots(root)), "--network-interface", "lo",
            sys.executable, "-m", "trainer", *job, "dist.elastic=true", f"hydra.run.dir={d}"],
    }
    results: dict[str, list[float]] = {name: [] for name in setups}
    for round_ in range(repeats):
        for name, command in setups.items():
            run_dir = root / f"tp-{round_}-{len(results[name])}-{abs(hash(name))}"
            results[name].append(_samples_per_sec(command(run_dir), run_dir, root))
    reference = statistics.median(results["torchrun, 2 workers"])
    return [[name, f"{statistics.median(v):,.0f}", f"{statistics.median(v) / reference:.3f}x",
             " ".join(f"{x:,.0f}" for x in v)] for name, v in results.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop-at", type=int, default=300, help="steps before the signal")
    parser.add_argument("--steps", type=int, default=400, help="steps per throughput run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-horovod", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data, what = mnist_root(root)
        print(f"data: {what}; {os.cpu_count()} CPUs")
        print("\npreemption after", args.stop_at, "steps (469 steps an epoch at batch 128)")
        print_table(["stopped by", "trained to step", "exit", "resumes from", "steps redone",
                     "signal to exit (s)"], preemption(root, data, args.stop_at))
        if not args.skip_horovod:
            print(f"\ntraining samples/s, 2 workers, {args.steps} steps, median of "
                  f"{args.repeats} alternated rounds")
            print_table(["launcher", "samples/s", "vs torchrun", "each round"],
                        throughput(root, data, args.steps, args.repeats))


if __name__ == "__main__":
    main()
