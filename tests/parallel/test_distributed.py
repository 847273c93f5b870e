"""Real multi-process runs on the CPU (Gloo): N workers reproduce one worker exactly.

Launched the way users launch: torchrun, and MPICH's mpiexec from the PyPI ``mpich`` wheel.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    BIN,
    EQUIVALENCE,
    EXACT,
    PACED,
    ROOT,
    SHRINK,
    descendants,
    finish,
    launch,
    max_difference,
    needs_mpi,
    run,
    weights,
)
from trainer.parallel.backends.rendezvous import free_port


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory) -> dict[str, torch.Tensor]:
    folder = tmp_path_factory.mktemp("one")
    run("none", 1, *EQUIVALENCE, f"hydra.run.dir={folder}/run", cwd=folder)
    return weights(folder / "run")


@pytest.mark.parametrize(
    "launcher,n",
    [("torchrun", 2), ("torchrun", 3), pytest.param("mpiexec", 2, marks=needs_mpi),
     pytest.param("mpiexec", 3, marks=needs_mpi)],
)
def test_n_workers_reproduce_one_worker(tmp_path, one_worker, launcher, n):
    result = run(launcher, n, *EQUIVALENCE, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert max_difference(one_worker, weights(tmp_path / "run")) < EXACT
    metrics = (tmp_path / "run" / "metrics.json").read_text()
    assert f'"world_size": {n}' in metrics and '"global_batch_size": 96' in metrics
    assert result.stdout.count("run directory:") == 1  # only rank 0 talks


def test_only_rank_zero_writes_and_all_ranks_share_its_directory(tmp_path):
    run("torchrun", 2, "trainer.max_steps=5", cwd=tmp_path)  # Hydra's timestamped default
    runs = list((tmp_path / "outputs" / "digits").iterdir())
    assert len(runs) == 1, runs  # the other rank's own directory was not left behind
    names = {p.name for p in runs[0].iterdir()}
    # .trainer.lock: the one-run-per-directory lock (kept: deleting it would race)
    assert names == {".hydra", "config.yaml", "checkpoints", "tb", "metrics.json", ".trainer.lock"}
    assert len(list((runs[0] / "tb").iterdir())) == 1  # one event file: rank 0's


def test_batch_that_does_not_split_over_workers_fails_on_every_rank(tmp_path):
    # Through trainer-launch: the job ends with the workers' exit 2, without torchrun's
    # ChildFailedError report repeating it.
    proc = subprocess.run(
        [str(BIN / "trainer-launch"), "torchrun", "3", "data.batch_size=64",
         f"hydra.run.dir={tmp_path}/r", *SHRINK], cwd=tmp_path, capture_output=True, text=True,
        timeout=120)
    err = proc.stderr
    assert proc.returncode == 2 and "ChildFailedError" not in err and "Traceback" not in err, err
    assert "data.batch_size=64: global batch 64 does not split over 3 workers" in err
    # Said once (the first rank of the node speaks for all three), on a line of its own.
    said = [ln for ln in err.splitlines() if "trainer: error:" in ln]
    assert len(said) == 1 and said[0].startswith("trainer: error: data.batch_size=64"), err


def _kill_all_after_checkpoint(proc: subprocess.Popen, folder: Path, step: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if folder.exists() and any(
            int(p.stem.split("-")[1]) >= step for p in folder.glob("step-*.pt")
        ):
            # The launcher and every worker at once (torchrun puts its workers in their own
            # sessions, so a process-group kill would miss them).
            for pid in [proc.pid, *descendants(proc.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.communicate()
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.005)
    pytest.fail("no checkpoint appeared in time")


def test_two_worker_resume_after_sigkill_is_bit_exact(tmp_path):
    # Dropout on: each rank's own RNG state has to come back for the runs to match. 80 steps;
    # the killed run is paced (50 steps a second at most) so the kill lands near step 30.
    args = ("data.batch_size=32", "trainer.epochs=2", "model.dropout=0.2",
            "trainer.checkpoint_every=9", "logger.sample_predictions=0")
    run("torchrun", 2, *args, f"hydra.run.dir={tmp_path}/ref", cwd=tmp_path)
    proc = launch("torchrun", 2, *args, *PACED, f"hydra.run.dir={tmp_path}/cut", cwd=ROOT)
    _kill_all_after_checkpoint(proc, tmp_path / "cut" / "checkpoints", 30)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    result = run("torchrun", 2, *args, f"hydra.run.dir={tmp_path}/cut", cwd=tmp_path)
    assert "resuming from" in result.stdout
    reference, resumed = weights(tmp_path / "ref"), weights(tmp_path / "cut")
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


def test_a_dead_worker_ends_the_job_with_one_line_within_the_timeout(tmp_path):
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2"}
    env["MASTER_PORT"] = str(free_port())
    args = ("trainer.epochs=10000", "dist.timeout=30", f"hydra.run.dir={tmp_path}/run")
    ranks = [
        launch("none", 1, *args, cwd=tmp_path, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)})
        for r in (0, 1)
    ]
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "checkpoints" / "last.pt").exists():
        assert time.monotonic() < deadline and ranks[0].poll() is None
        time.sleep(0.05)
    ranks[1].kill()
    killed = time.monotonic()
    _, err = finish(ranks[0], timeout=90)
    assert time.monotonic() - killed < 60
    assert ranks[0].returncode == 2
    assert err.strip().splitlines()[-1].startswith("trainer: error: rank 0 lost contact")
    assert "Traceback" not in err


def test_sync_batchnorm_workers_reproduce_one_worker_and_plain_bn_does_not(tmp_path):
    bn = ("model.norm=batch", *EQUIVALENCE)
    run("none", 1, *bn, f"hydra.run.dir={tmp_path}/one", cwd=tmp_path)
    run("torchrun", 2, *bn, "model.sync_bn=true", f"hydra.run.dir={tmp_path}/sync", cwd=tmp_path)
    run("torchrun", 2, *bn, f"hydra.run.dir={tmp_path}/local", cwd=tmp_path)
    one = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)["model"]
    sync = torch.load(tmp_path / "sync" / "checkpoints" / "last.pt", weights_only=True)["model"]
    local = weights(tmp_path / "local")
    assert "2.running_var" in one  # BatchNorm1d after the first Linear, statistics included
    assert max_difference(one, sync) < EXACT
    assert max_difference(one, local) > 1e-3  # per-worker statistics: a different model


@needs_mpi
def test_launcher_and_mpi_library_mismatch_is_refused(tmp_path):
    # What a foreign mpirun looks like from inside: its variables say 2 ranks, while the MPI
    # library mpi4py was built against sees a singleton world.
    env = {**os.environ, "PMI_RANK": "0", "PMI_SIZE": "2"}
    proc = launch("none", 1, f"hydra.run.dir={tmp_path}/r", cwd=tmp_path, env=env)
    _, err = finish(proc, timeout=120)
    assert proc.returncode == 2
    assert "mpich launcher says rank 0 of 2, but mpi4py's MPI library says rank 0 of 1" in err


def test_bf16_gradient_compression_trains_close_to_one_worker(tmp_path, one_worker):
    run("torchrun", 2, *EQUIVALENCE, "dist.compression=bf16", f"hydra.run.dir={tmp_path}/r",
        cwd=tmp_path)
    difference = max_difference(one_worker, weights(tmp_path / "r"))
    # bf16 rounding of the averaged gradients only (both runs float64 otherwise): measured
    # 2.1e-3 on an AMD EPYC; the bound leaves 20x for other CPUs.
    assert 1e-6 < difference < 5e-2


def test_unused_parameters_and_a_stop_asked_on_one_rank_only(tmp_path):
    """A parameter that takes no part in the loss: DDP's 182-line error (advising an argument
    the config had no key for) is one line naming dist.find_unused_parameters. With it set the
    run trains, and run.request_stop() on rank 1 alone (which used to abort Gloo: "a collective
    mismatch") stops every rank after the same step, checkpointed, exit 0."""
    import json

    from tests.helpers import ROOT

    model = ["model._target_=tests.helpers.broken.Model", "~model.hidden", "~model.dropout",
             "~model.norm"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = launch("torchrun", 2, *model, "trainer.max_steps=3", f"hydra.run.dir={tmp_path}/bad",
                  cwd=tmp_path, env=env)
    _, err = finish(proc, timeout=240)
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if line.startswith("trainer: error: ")]
    assert lines and lines[0] == (
        "trainer: error: the model has parameters that took no part in the loss, which DDP "
        "cannot average: set dist.find_unused_parameters=true (DDP then searches the graph "
        "every step), or remove those parameters (or set their requires_grad=False)")
    # (bare torchrun's agent adds its own ChildFailedError report: docs/launching.md)
    assert "Expected to have finished reduction" not in err and "trainer/engine" not in err
    proc = launch("torchrun", 2, *model, "dist.find_unused_parameters=true",
                  "+callbacks.stop._target_=tests.helpers.broken.StopOnOneRank",
                  "+callbacks.stop.rank=1", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path,
                  env=env)
    out, err = finish(proc, timeout=240)
    assert proc.returncode == 0, err[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stopped_early"] is True and 3 <= metrics["steps"] < 440
    assert "rank 1 asked to stop at step 3" in out
    assert (tmp_path / "run" / "checkpoints" / f"step-{metrics['steps']:08d}.pt").is_file()


@needs_mpi
def test_a_taken_master_port_ends_every_mpi_rank_in_one_line(tmp_path):
    """MASTER_PORT held by another process: rank 0 used to fail at once while rank 1 waited on
    the foreign listener until it closed; now every rank ends, one line per job."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        started = time.monotonic()
        proc = launch("mpiexec", 2, "dist.timeout=20", f"hydra.run.dir={tmp_path}/run",
                      cwd=tmp_path, env=env)
        _, err = finish(proc, timeout=120)
    assert time.monotonic() - started < 30
    assert proc.returncode == 2
    lines = [line for line in err.splitlines() if line.startswith("trainer: error: ")]
    assert lines == [f"trainer: error: MASTER_PORT={port} is taken on rank 0's host "
                     "(127.0.0.1): another process listens there; choose a free port, or unset "
                     "MASTER_PORT (under mpirun rank 0 then picks a free one itself)"]
