"""Rank and world size from each launcher's environment, and the backend each one gets."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli
from trainer.parallel.backends import choose
from trainer.parallel.identity import Identity, from_environment


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, Identity(0, 1, 0, "none")),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, Identity(3, 4, 1, "torchrun", 4)),
        (
            {"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "8",
             "OMPI_COMM_WORLD_LOCAL_RANK": "2"},
            Identity(2, 8, 2, "openmpi", 8),
        ),
        ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1"}, Identity(1, 2, 1, "mpich", 2)),
        ({"PMIX_RANK": "5", "PMI_SIZE": "6"}, Identity(5, 6, 0, "pmix", 6)),
        ({"SLURM_PROCID": "7", "SLURM_NTASKS": "16", "SLURM_LOCALID": "3"},
         Identity(7, 16, 3, "slurm", 16)),
        # (no local size given: the whole world is taken to share the node)
        # horovodrun runs on top of an MPI or Gloo launcher: its own variables win.
        ({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "0",
          "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"},
         Identity(1, 2, 0, "horovod", 2)),
        # horovodrun --mpi: MPI's variables and Horovod's controller setting.
        ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2",
          "HOROVOD_CONTROLLER": "mpi"}, Identity(1, 2, 1, "horovod", 2)),
    ],
)
def test_identity_from_each_launcher(env, expected):
    assert from_environment(env) == expected
    assert from_environment(env).is_primary == (expected.rank == 0)


@pytest.mark.parametrize(
    "asked,env,chosen",
    [
        ("auto", {}, "none"),
        ("auto", {"RANK": "0", "WORLD_SIZE": "1"}, "none"),  # a launcher with one rank
        ("auto", {"RANK": "0", "WORLD_SIZE": "4"}, "torch"),  # torchrun
        ("auto", {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}, "torch"),
        ("auto", {"PMI_RANK": "0", "PMI_SIZE": "2"}, "torch"),  # MPICH mpiexec
        ("auto", {"SLURM_PROCID": "3", "SLURM_NTASKS": "8"}, "torch"),
        ("auto", {"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2", "PMI_RANK": "0", "PMI_SIZE": "2"},
         "horovod"),
        # horovodrun's MPI controller: MPI's variables, plus Horovod's controller setting
        ("auto", {"PMI_RANK": "1", "PMI_SIZE": "2", "HOROVOD_CONTROLLER": "mpi"}, "horovod"),
        ("auto", {"HOROVOD_CONTROLLER": "mpi"}, "none"),  # one process: nothing to reduce
        ("none", {"RANK": "0", "WORLD_SIZE": "4"}, "none"),
        ("torch", {}, "torch"),
    ],
)
def test_auto_picks_the_backend_for_each_launcher(asked, env, chosen):
    assert choose(asked, from_environment(env)) == chosen


def test_unknown_backend_is_refused_by_the_schema():
    from hydra.errors import HydraException

    from trainer.config import compose_config
    from trainer.tools.hydra_errors import one_line

    with pytest.raises(HydraException) as caught:
        compose_config("dist.backend=gloo")
    line = one_line(caught.value)
    assert line == "dist.backend=gloo is invalid: use auto, torch, horovod or none"


def test_backend_none_trains_one_process_even_under_a_launcher(tmp_path):
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    result = run_cli(f"hydra.run.dir={tmp_path}/run", "trainer.max_steps=2", "dist.backend=none",
                     cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "metrics.json").exists()  # it is rank 0 of its own job


def test_mpirun_without_mpi4py_says_what_to_install(monkeypatch):
    import sys

    from trainer.errors import UserError
    from trainer.parallel.backends.rendezvous import _mpi_world

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as where it is not installed
    with pytest.raises(UserError, match=r"pip install mpi4py \(and mpich, where the machine "
                                        r"has no MPI of its own\), or export MASTER_ADDR"):
        _mpi_world()
