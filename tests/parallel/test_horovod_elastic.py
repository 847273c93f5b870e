"""Horovod elastic for real: horovodrun --gloo with a host-discovery script whose answer the
test changes while the run trains (2 slots -> 1 -> 2), and a worker killed with SIGKILL. Every
run must end with the weights of one uninterrupted worker at the same global batch (float64).

A worker that dies takes its host out of the job (Horovod blacklists it), so the kill test
gives the two workers two host names of this machine: localhost and 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import EXACT, FLOAT64, ROOT, SHRINK, descendants, max_difference, run, weights
from tests.helpers.errors import one_line_error

BIN = Path(sys.executable).parent
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("horovod") is None,
                       reason="Horovod is not installed (launch/install_horovod.sh)"),
]
# The digits MLP with per-sample dropout, 300 steps at global batch 96 (about 21 epochs), in
# float64; a log line (and a commit) every 5 steps.
RUN = ("data.batch_size=96", "trainer.max_steps=300", "trainer.epochs=30",
       "logger.sample_predictions=0", "model.dropout=0.2", FLOAT64, "trainer.log_every=5")
# 50 ms per step: time for horovodrun to notice a new answer of the discovery script (it asks
# every second) while the run trains.
PACE = ("+callbacks.pace._target_=tests.helpers.pace.Pace", "+callbacks.pace.seconds=0.05")
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    folder = tmp_path_factory.mktemp("one")
    run("none", 1, *RUN, f"hydra.run.dir={folder}/run", cwd=folder)
    return weights(folder / "run")


class Elastic:
    """``horovodrun --gloo`` elastic on this machine, its hosts read from a file the test
    rewrites, its output collected as it comes."""

    def __init__(self, folder: Path, hosts: str) -> None:
        self.hosts = folder / "hosts"
        self.hosts.write_text(hosts)
        script = folder / "discover.sh"
        script.write_text(f"#!/bin/sh\ncat {self.hosts}\n")
        script.chmod(0o755)
        self.run_dir = folder / "run"
        self.proc = subprocess.Popen(
            [str(BIN / "horovodrun"), "--gloo", "-np", "2", "--min-np", "1", "--max-np", "2",
             "--host-discovery-script", str(script), "--network-interface", "lo",
             sys.executable, "-m", "trainer", *RUN, *PACE, "dist.elastic=true",
             f"hydra.run.dir={self.run_dir}", *SHRINK],
            cwd=folder, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, done, what: str, timeout: float = 120):
        """Poll ``done()`` until it returns something true (returned), or fail saying
        ``what`` was awaited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = done()
            if found:
                return found
            if self.proc.poll() is not None:
                time.sleep(0.3)  # the reader takes the last lines
                found = done()
                if found:
                    return found
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"waited for {what}; output:\n{self.output()[-4000:]}")

    def steps(self) -> list[int]:
        """The steps of rank 0's progress lines so far."""
        return [int(m.group(1)) for m in
                (re.search(r"<stdout>:step (\d+)/", ln) for ln in list(self.lines)) if m]

    def wait_for_step(self, step: int) -> None:
        self.wait_for(lambda: any(s >= step for s in self.steps()), f"step {step}")

    def wait_for_attempts(self, n: int) -> list[tuple[int, int]]:
        """(workers, step) of the first ``n`` attempts."""
        return self.wait_for(lambda: len(self.sizes()) >= n and self.sizes(),
                             f"{n} elastic attempts")

    def sizes(self) -> list[tuple[int, int]]:
        """(workers, step) of every attempt, from rank 0's "elastic:" lines."""
        return [(int(m.group(1)), int(m.group(2))) for m in
                (re.search(r"elastic: (\d+) worker\(s\) from step (\d+)", ln)
                 for ln in list(self.lines)) if m]

    def finish(self, timeout: float = 240) -> int:
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.3)
        return code

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _workers(proc: subprocess.Popen) -> dict[str, int]:
    """pid of each live trainer worker, by the Horovod host name it was started for."""
    found = {}
    for pid in descendants(proc.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        env = dict(e.decode(errors="replace").partition("=")[::2] for e in environ if e)
        if b"trainer" in cmdline and "HOROVOD_HOSTNAME" in env and "HOROVOD_RANK" in env:
            found[f"{env['HOROVOD_HOSTNAME']}/{env['HOROVOD_RANK']}"] = pid
    return found


@pytest.mark.slow
def test_elastic_shrinks_and_grows_and_ends_as_one_worker(tmp_path, one_worker):
    job = Elastic(tmp_path, "localhost:2\n")
    try:
        job.wait_for_step(60)
        job.hosts.write_text("localhost:1\n")  # a slot is taken away
        shrunk = job.wait_for_attempts(2)[1]
        job.wait_for_step(shrunk[1] + 30)
        job.hosts.write_text("localhost:2\n")  # and given back
        job.wait_for_attempts(3)
        assert job.finish() == 0, job.output()[-4000:]
    finally:
        job.stop()
    sizes = job.sizes()
    assert [n for n, _ in sizes] == [2, 1, 2], sizes
    assert 0 == sizes[0][1] < sizes[1][1] < sizes[2][1] < 300, sizes
    metrics = json.loads((job.run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 300 and metrics["world_size"] == 2
    assert max_difference(one_worker, weights(job.run_dir)) < EXACT


@pytest.mark.slow
def test_elastic_goes_on_when_rank_0_is_killed(tmp_path, one_worker):
    job = Elastic(tmp_path, "localhost:1\n127.0.0.1:1\n")
    try:
        job.wait_for_step(60)
        workers = _workers(job.proc)
        rank0 = next(pid for name, pid in workers.items() if name.endswith("/0"))
        os.kill(rank0, signal.SIGKILL)  # rank 0: it held the run directory and wrote the files
        job.wait_for_attempts(2)
        assert job.finish() == 0, job.output()[-4000:]
    finally:
        job.stop()
    sizes = job.sizes()
    assert [n for n, _ in sizes] == [2, 1], sizes
    # The survivor went back to its last commit: at most 5 steps (trainer.log_every) before
    # the kill, never more than one log interval lost.
    assert json.loads((job.run_dir / "metrics.json").read_text())["steps"] == 300
    assert max_difference(one_worker, weights(job.run_dir)) < EXACT


def test_elastic_needs_an_elastic_launch(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "dist.elastic=true", f"hydra.run.dir={tmp_path}/r",
         *SHRINK], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    one_line_error(result, "dist.elastic=True is invalid", "--host-discovery-script")


def test_an_elastic_launch_needs_dist_elastic(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "trainer", f"hydra.run.dir={tmp_path}/r", *SHRINK],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "HOROVOD_ELASTIC": "1"})
    one_line_error(result, "horovodrun started an elastic job", "add dist.elastic=true")
