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
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Job:
    """One contender's command; ``result`` reads its numbers after it exits (from its output
    and its run directory)."""

    name: str
    command: list[str]
    result: Callable[[str, Path], dict]


@dataclass
class Timing:
    samples_per_sec: float
    startup_s: float
    process_s: float


def last_json_line(stdout: str, _out: Path) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def metrics_json(_stdout: str, out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def trainer_command() -> list[str]:
    """The ``trainer`` console script beside this Python (what users type), else -m."""
    script = Path(sys.executable).with_name("trainer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "trainer"]


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


def ratios(mine: list[Timing], reference: list[Timing]) -> list[float]:
    """Per-round ratios of samples/s (rounds pair up: each ran side by side)."""
    return [m.samples_per_sec / r.samples_per_sec for m, r in zip(mine, reference, strict=True)]


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
