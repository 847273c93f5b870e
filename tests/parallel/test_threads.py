"""One thread budget per node: under any launcher each worker defaults to the node's CPUs
divided among its workers (or the cores the launcher bound it to), unless OMP_NUM_THREADS or
dist.threads_per_worker says otherwise; the choice is logged once."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from trainer.parallel.backends import threads_per_worker
from trainer.parallel.identity import from_environment

CPUS = os.cpu_count()
BOUND = len(os.sched_getaffinity(0)) < CPUS  # this test process itself was pinned


@pytest.mark.parametrize("env,local", [
    ({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "4", "HOROVOD_LOCAL_RANK": "1",
      "HOROVOD_LOCAL_SIZE": "2"}, 2),
    ({"RANK": "0", "WORLD_SIZE": "8", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4"}, 4),
    ({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 2),
    ({"PMI_RANK": "0", "PMI_SIZE": "3", "MPI_LOCALNRANKS": "3"}, 3),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4(x2)"}, 4),
    ({"PMIX_RANK": "0", "PMI_SIZE": "2"}, 2),  # no local size: the world shares the node
])
@pytest.mark.skipif(BOUND, reason="this process is pinned to fewer CPUs than the machine has")
def test_each_launcher_splits_the_node_among_its_workers(env, local):
    ident = from_environment(env)
    assert ident.local_size == local
    threads, why = threads_per_worker(None, ident, environ={})
    assert threads == max(1, CPUS // local)
    assert why == f"{CPUS} CPU(s) / {local} worker(s) on this node"


def test_the_users_choice_wins():
    ident = from_environment({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"})
    assert threads_per_worker(3, ident, environ={"OMP_NUM_THREADS": "5"}) == (
        3, "dist.threads_per_worker")
    assert threads_per_worker(None, ident, environ={"OMP_NUM_THREADS": "5"}) == (
        None, "OMP_NUM_THREADS=5")
    assert threads_per_worker(None, from_environment({}), environ={}) == (None, "torch's default")


@pytest.mark.skipif(importlib.util.find_spec("horovod") is None, reason="Horovod not installed")
def test_horovodrun_workers_default_to_their_share_of_the_node(tmp_path):
    """The case users hit: horovodrun leaves each worker torch's default (all cores), which on
    2 cores and 2 workers ran 8x slower than one thread each."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(PATH=f"{Path(sys.executable).parent}:{env['PATH']}", PYTHON=sys.executable)
    done = subprocess.run(
        ["bash", str(ROOT / "launch" / "horovodrun.sh"), "2", "trainer.max_steps=3",
         "logger.progress_bar=false", "logger.tensorboard=false", f"hydra.run.dir={tmp_path}/r"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = max(1, CPUS // 2)
    line = (f"threads: {expected} intra-op thread(s) per worker ({CPUS} CPU(s) / 2 worker(s) "
            "on this node)")
    assert sum(line in x for x in (done.stdout + done.stderr).splitlines()) == 1
