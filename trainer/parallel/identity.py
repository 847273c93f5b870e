"""Who am I in the job: rank, world size, local rank, is-primary, read from the launcher.

Before a backend exists, these answers come from the launcher's environment (which rank
logs, which backend to start); once it exists, the backend (``run.backend.rank`` ...) is the
one source, and nothing else asks. A plain ``python``/``trainer`` run with no launcher is
rank 0 of 1.

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
