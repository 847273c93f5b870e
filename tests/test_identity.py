"""Rank and world size from each launcher's environment, and what a launch does today."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli
from trainer.identity import Identity, from_environment


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, Identity(0, 1, 0, "none")),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, Identity(3, 4, 1, "torchrun")),
        (
            {"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "8",
             "OMPI_COMM_WORLD_LOCAL_RANK": "2"},
            Identity(2, 8, 2, "openmpi"),
        ),
        ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1"}, Identity(1, 2, 1, "mpich")),
        ({"PMIX_RANK": "5", "PMI_SIZE": "6"}, Identity(5, 6, 0, "pmix")),
        ({"SLURM_PROCID": "7", "SLURM_NTASKS": "16", "SLURM_LOCALID": "3"},
         Identity(7, 16, 3, "slurm")),
        # horovodrun runs on top of an MPI or Gloo launcher: its own variables win.
        ({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "0",
          "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"},
         Identity(1, 2, 0, "horovod")),
    ],
)
def test_identity_from_each_launcher(env, expected):
    assert from_environment(env) == expected
    assert from_environment(env).is_primary == (expected.rank == 0)


def test_multi_rank_launch_stops_with_a_clear_message(tmp_path):
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    result = run_cli(f"hydra.run.dir={tmp_path}/run", "trainer.max_steps=2", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "rank 0 of 2 by torchrun" in result.stderr and "one process only" in result.stderr


def test_backend_none_trains_one_process_even_under_a_launcher(tmp_path):
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    result = run_cli(f"hydra.run.dir={tmp_path}/run", "trainer.max_steps=2", "dist.backend=none",
                     cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "metrics.json").exists()  # it is rank 0 of its own job
