"""Run training jobs as separate processes, alternated, and compare what each reports.

bench/overhead.py and bench/peers.py time whole programs the way a user starts them: each job
is a fresh process (its imports, config and start-up included), launched in turn with the
others so that a machine's drift hits every contender alike. A job reports its training
samples/s, training seconds and ``startup_s`` (process start to first step) in a JSON file or
as the last line it prints; the parent adds the whole process's wall time.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Job:
    """One contender's command; ``result`` reads its numbers after it exits (from its output
    and its run directory); ``lockstep``: what the command adds to take turns (a callback)."""

    name: str
    command: list[str]
    result: Callable[[str, Path], dict]
    lockstep: list[str] = field(default_factory=list)


@dataclass
class Timing:
    samples_per_sec: float
    startup_s: float
    process_s: float


REPO = Path(__file__).resolve().parents[1]
# How trainer takes its turns in the lockstep: a callback, added as a user adds one.
LOCKSTEP_CALLBACK = "+callbacks.lockstep._target_=bench.lockstep_callback.LockstepTurns"


def last_json_line(stdout: str, _out: Path) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def metrics_json(_stdout: str, out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def trainer_command() -> list[str]:
    """The ``trainer`` console script beside this Python (what users type), else -m."""
    script = Path(sys.executable).with_name("trainer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "trainer"]


def trainer_job(launch: list[str], root: Path, epochs: int, threads: int, steps: int = 0,
                extra: tuple[str, ...] = ()) -> Job:
    """trainer's MNIST contender: ``launch`` (the console script, or torchrun's ``-m
    trainer``) with the recipe and its default logging; ``steps``: only the first so many."""
    # Every one of the 60,000 training images, as the hand-written loop and the peers train
    # on (the recipe holds 5,000 out for validation): the same steps on each side.
    return Job("trainer", [*launch, "recipe=mnist", f"data.root={root}", "data.download=false",
                           "data.val_fraction=0",
                           f"trainer.epochs={epochs}", f"dist.threads_per_worker={threads}",
                           "hydra.run.dir={out}",
                           *([f"trainer.max_steps={steps}"] if steps else []), *extra],
               metrics_json, lockstep=[LOCKSTEP_CALLBACK])


def run_job(job: Job, out: Path, env: dict[str, str] | None = None) -> Timing:
    out.mkdir(parents=True, exist_ok=True)
    command = [c.replace("{out}", str(out)) for c in job.command]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    process_s = time.perf_counter() - started
    # The job's files (checkpoints, TensorBoard) go to disk now, not while the next job trains:
    # the kernel's writeback would otherwise steal a core from whichever contender runs next.
    os.sync()
    if done.returncode:
        sys.exit(f"{job.name} failed (exit {done.returncode}): {' '.join(command)}\n"
                 f"{done.stderr[-3000:]}")
    got = job.result(done.stdout, out)
    return Timing(got["samples_per_sec"], got["startup_s"], process_s)


def alternate(jobs: list[Job], rounds: int, scratch: Path, tag: str,
              env: dict[str, str] | None = None) -> dict[str, list[Timing]]:
    """Every job once per round, the order rotated each round; the timings per job."""
    timings: dict[str, list[Timing]] = {job.name: [] for job in jobs}
    for r in range(rounds):
        order = jobs[r % len(jobs):] + jobs[: r % len(jobs)]
        for job in order:
            timing = run_job(job, scratch / f"{tag}-{job.name}-{r}", env)
            timings[job.name].append(timing)
            print(f"  {tag} round {r} {job.name}: {timing.samples_per_sec:,.0f} samples/s, "
                  f"startup {timing.startup_s:.2f} s, process {timing.process_s:.2f} s",
                  file=sys.stderr, flush=True)
    return timings


def lockstep(jobs: list[Job], rounds: int, scratch: Path, tag: str, every: int = 50,
             env: dict[str, str] | None = None) -> dict[str, list[float]]:
    """Every round, all jobs at once taking turns of ``every`` steps (bench/lockstep.py), the
    first turn rotated each round; each job's training samples/s in its own turns."""
    from bench.lockstep import ENV

    got: dict[str, list[float]] = {job.name: [] for job in jobs}
    # The repository first: the contenders import bench.lockstep (trainer its callback).
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    for r in range(rounds):
        order = jobs[r % len(jobs):] + jobs[: r % len(jobs)]
        turn = [os.pipe() for _ in order]  # turn[i]: where order[i]'s turn arrives
        ready_in, ready_out = os.pipe()
        running = []
        for i, job in enumerate(order):
            mine, following = turn[i][0], turn[(i + 1) % len(order)][1]
            out = scratch / f"{tag}-lockstep-{job.name}-{r}"
            out.mkdir(parents=True, exist_ok=True)
            command = [c.replace("{out}", str(out)) for c in job.command + job.lockstep]
            log, errors = (out / "output.txt").open("w+"), (out / "errors.txt").open("w")
            proc = subprocess.Popen(
                command, stdout=log, stderr=errors, text=True,
                pass_fds=(mine, following, ready_out),
                env={**os.environ, **(env or {}), "PYTHONPATH": path,
                     ENV: f"{mine},{following},{ready_out},{every}"})
            errors.close()  # the child has its own copy
            running.append((job, out, log, proc))
        # Only the contenders hold the pipes now: one that exits closes its ends, and the
        # next one reads the end of file (it then runs alone) instead of waiting for ever.
        for fd in [ready_out, *(end for pipe in turn for end in pipe if end != turn[0][1])]:
            os.close(fd)
        _wait_until_ready(running, ready_in)
        os.write(turn[0][1], b"t")  # the first turn
        os.close(turn[0][1])
        for job, out, log, proc in running:
            proc.wait()
            log.seek(0)
            output = log.read()
            log.close()
            if proc.returncode:
                errors = (out / "errors.txt").read_text()
                sys.exit(f"{job.name} failed in lockstep (exit {proc.returncode}):\n"
                         f"{errors[-3000:]}")
            result = job.result(output, out)
            sps = result["lockstep_samples_per_sec"]
            got[job.name].append(sps)
            print(f"  {tag} lockstep round {r} {job.name}: {sps:,.0f} samples/s in "
                  f"{result['lockstep_turns']} turns", file=sys.stderr, flush=True)
        os.close(ready_in)
        os.sync()
    return got


def _wait_until_ready(running: list, ready: int) -> None:
    """Until every contender has said it is ready to train (or one has failed)."""
    waiting = len(running)
    while waiting:
        if select.select([ready], [], [], 1.0)[0]:
            said = os.read(ready, waiting)
            waiting -= len(said)
            if said:
                continue
            time.sleep(0.1)  # the end of the file: all have closed it, one has exited
        failed = [(job, proc) for job, _, _, proc in running if proc.poll() is not None]
        if failed:
            for _, _, _, proc in running:
                proc.kill()
            job, proc = failed[0]
            sys.exit(f"{job.name} exited (code {proc.returncode}) before its first step in "
                     "lockstep; its errors.txt says why")


def ratios(mine: list[Timing], reference: list[Timing]) -> list[float]:
    """Per-round ratios of samples/s (rounds pair up: each ran side by side)."""
    return [m.samples_per_sec / r.samples_per_sec for m, r in zip(mine, reference, strict=True)]


def differences(mine: list[Timing], reference: list[Timing], field: str) -> list[float]:
    """Per-round differences of a timing's ``field`` (``startup_s``, ``process_s``)."""
    return [getattr(m, field) - getattr(r, field) for m, r in zip(mine, reference, strict=True)]


def median(values: list[float]) -> float:
    return statistics.median(values)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"
