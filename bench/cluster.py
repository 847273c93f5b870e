"""What the cluster costs: work lost to a preemption, and horovodrun's speed next to torchrun's.

    python bench/cluster.py            # MNIST MLP (real MNIST when present), 2 workers

Table 1, preemption: a run is stopped after --stop-at steps, the way a cluster stops it. With
the handler (SIGTERM, what SLURM/Kubernetes/torchrun send) the run checkpoints the step it is
on; without it (SIGKILL: what a SIGTERM did before the handler existed, and what any process
without one suffers) the resumed run restarts from the last checkpoint, the epoch end at the
default trainer.checkpoint_every=0. "Steps redone" is what the resumed run trains again.

Table 2, throughput: training samples/s (the trainer's own, evaluation and checkpoints
excluded) of the same job on 2 workers under torchrun and under horovodrun: its MPI controller
(launch/horovodrun.sh's default where an MPI is installed), its Gloo controller with the thread
default (the node's CPUs / its workers) and with torch's own default that horovodrun workers
used to keep (every core each), and elastic (dist.elastic=true, Gloo: the state committed to
memory at every log line, every 50 steps). Alternated over --repeats rounds; the median is
printed.

Table 3, why the controllers differ: one step's gradient all-reduce alone (the MLP's 2.7 MB),
as DDP does it (one bucket, torch's Gloo) and as hvd.DistributedOptimizer does it (an async
all-reduce per parameter, fused), under Horovod's MPI and Gloo controllers.
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


def _samples_per_sec(command: list[str], run_dir: Path, root: Path,
                     env: dict[str, str]) -> float:
    done = subprocess.run(command, capture_output=True, text=True, env={**_env(), **env},
                          cwd=root, timeout=900)
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
    script = ["bash", str(ROOT / "launch" / "horovodrun.sh"), "2", *job]
    mpi, gloo = {"HOROVOD_CONTROLLER": "mpi"}, {"HOROVOD_CONTROLLER": "gloo"}
    # name: (command for a run directory, extra environment)
    setups = {
        "torchrun, 2 workers": (lambda d: [str(BIN / "torchrun"), "--standalone",
                                           "--nproc-per-node=2", "-m", "trainer", *job,
                                           f"hydra.run.dir={d}"], {}),
        "horovodrun --mpi (launch/horovodrun.sh default)": (
            lambda d: [*script, f"hydra.run.dir={d}"], mpi),
        "horovodrun --gloo, thread default": (lambda d: [*script, f"hydra.run.dir={d}"], gloo),
        f"horovodrun --gloo, {cores} threads each (before)": (
            lambda d: [*script, f"dist.threads_per_worker={cores}", f"hydra.run.dir={d}"], gloo),
        "horovodrun --gloo elastic (commit every 50 steps)": (lambda d: [
            str(BIN / "horovodrun"), "--gloo", "-np", "2", "--min-np", "1", "--max-np", "2",
            "--host-discovery-script", str(_two_slots(root)), "--network-interface", "lo",
            sys.executable, "-m", "trainer", *job, "dist.elastic=true",
            f"hydra.run.dir={d}"], {}),
    }
    results: dict[str, list[float]] = {name: [] for name in setups}
    for round_ in range(repeats):
        for name, (command, env) in setups.items():
            run_dir = root / f"tp-{round_}-{len(results[name])}-{abs(hash(name))}"
            results[name].append(_samples_per_sec(command(run_dir), run_dir, root, env))
    reference = statistics.median(results["torchrun, 2 workers"])
    return [[name, f"{statistics.median(v):,.0f}", f"{statistics.median(v) / reference:.3f}x",
             " ".join(f"{x:,.0f}" for x in v)] for name, v in results.items()]


# The MNIST MLP's gradients (784-512-512-10): what one step all-reduces.
_GRADIENTS = (512 * 784, 512, 512 * 512, 512, 10 * 512, 10)


def _allreduce_worker(which: str, rounds: int) -> None:
    """Run under a launcher: time all-reducing the MLP's gradients as each backend does."""
    import torch

    torch.set_num_threads(1)
    grads = [torch.randn(n) for n in _GRADIENTS]
    if which == "horovod":
        import horovod.torch as hvd

        hvd.init()
        rank = hvd.rank()

        def step():  # as hvd.DistributedOptimizer: one async all-reduce per parameter, fused
            handles = [hvd.allreduce_async_(g, name=f"g{i}", op=hvd.Average)
                       for i, g in enumerate(grads)]
            for handle in handles:
                hvd.synchronize(handle)
    else:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        rank, flat = dist.get_rank(), torch.cat(grads)

        def step():  # as DDP: the gradients in one bucket
            dist.all_reduce(flat)
    for _ in range(20):
        step()
    started = time.perf_counter()
    for _ in range(rounds):
        step()
    if rank == 0:
        print(json.dumps({"ms": (time.perf_counter() - started) / rounds * 1e3}))
    if which != "horovod":  # a Gloo group left to interpreter exit can abort the process
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def allreduce(root: Path, rounds: int, repeats: int) -> list[list]:
    script = [str(Path(__file__).resolve()), "--allreduce-worker"]
    me = [sys.executable, *script]
    setups = {
        "torch.distributed, Gloo": ([str(BIN / "torchrun"), "--standalone",
                                     "--nproc-per-node=2", *script, "torch"], {}),
        "Horovod, MPI controller (MPICH)": (
            [str(BIN / "mpiexec"), "-n", "2", *me, "horovod"], {}),
        "Horovod, Gloo controller": ([str(BIN / "horovodrun"), "--gloo", "-np", "2", "-H",
                                      "localhost:2", *me, "horovod"], {}),
    }
    results: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(repeats):
        for name, (command, env) in setups.items():
            done = subprocess.run([*command, str(rounds)], capture_output=True, text=True,
                                  env={**_env(), **env}, cwd=root, timeout=600)
            found = [ln for ln in done.stdout.splitlines() if '{"ms"' in ln]
            if done.returncode != 0 or not found:
                raise SystemExit(f"{name} failed:\n{done.stdout[-1000:]}{done.stderr[-2000:]}")
            results[name].append(json.loads(found[0][found[0].index("{"):])["ms"])
    reference = statistics.median(results["torch.distributed, Gloo"])
    return [[name, f"{statistics.median(v):.2f}", f"{statistics.median(v) / reference:.2f}x",
             " ".join(f"{x:.2f}" for x in v)] for name, v in results.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop-at", type=int, default=300, help="steps before the signal")
    parser.add_argument("--steps", type=int, default=400, help="steps per throughput run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-horovod", action="store_true")
    parser.add_argument("--allreduce-worker", nargs=2, metavar=("BACKEND", "ROUNDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allreduce_worker:
        _allreduce_worker(args.allreduce_worker[0], int(args.allreduce_worker[1]))
        return
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
            print(f"\none step's gradient all-reduce (MNIST MLP, {sum(_GRADIENTS):,} floats), "
                  f"2 processes, ms, median of {args.repeats}")
            print_table(["all-reduce", "ms", "vs torch", "each round"],
                        allreduce(root, 300, args.repeats))


if __name__ == "__main__":
    main()
