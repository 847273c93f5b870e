"""Who am I in the job: rank, world size, local rank, is-primary, barrier.

Every rank question in the project goes through this module. Before a process group exists the
answers come from the launcher's environment; once ``torch.distributed`` (or, later, Horovod)
is initialised the live communicator is authoritative. A plain ``python``/``trainer`` run with
no launcher is rank 0 of 1.

Launchers and the variables they set, in the order they are consulted:

=============  ===================  ====================  ==========================
launcher       rank                 world size            local rank
=============  ===================  ====================  ==========================
horovodrun     HOROVOD_RANK         HOROVOD_SIZE          HOROVOD_LOCAL_RANK
torchrun       RANK                 WORLD_SIZE            LOCAL_RANK
OpenMPI        OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_SIZE  OMPI_COMM_WORLD_LOCAL_RANK
MPICH (Hydra)  PMI_RANK             PMI_SIZE              MPI_LOCALRANKID
PMIx           PMIX_RANK            (PMI_SIZE)            (none)
SLURM srun     SLURM_PROCID         SLURM_NTASKS          SLURM_LOCALID
=============  ===================  ====================  ==========================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch.distributed as torch_dist

# (launcher, rank var, size var, local-rank var); None where a launcher has no such variable.
_LAUNCHERS: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("horovod", "HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK"),
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("pmix", "PMIX_RANK", "PMI_SIZE", None),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
)


@dataclass(frozen=True)
class Identity:
    """Where this process sits in the job, and which launcher said so."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"

    @property
    def is_primary(self) -> bool:
        return self.rank == 0


def from_environment(env: Mapping[str, str] | None = None) -> Identity:
    """Read the identity a launcher put in the environment (single process if none did)."""
    env = os.environ if env is None else env
    for launcher, rank_var, size_var, local_var in _LAUNCHERS:
        if rank_var not in env:
            continue
        size = int(env[size_var]) if size_var and size_var in env else 1
        local = int(env[local_var]) if local_var and local_var in env else 0
        return Identity(int(env[rank_var]), size, local, launcher)
    return Identity()


def current() -> Identity:
    """The live identity: the process group's once initialised, else the environment's."""
    env_identity = from_environment()
    if torch_dist.is_available() and torch_dist.is_initialized():
        return Identity(
            torch_dist.get_rank(),
            torch_dist.get_world_size(),
            env_identity.local_rank,
            env_identity.launcher,
        )
    return env_identity


def rank() -> int:
    return current().rank


def world_size() -> int:
    return current().world_size


def local_rank() -> int:
    return current().local_rank


def is_primary() -> bool:
    return current().is_primary


def barrier() -> None:
    """Wait for every rank; a no-op in a single process."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
