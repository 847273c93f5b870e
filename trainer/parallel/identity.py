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
 (its --mpi)   an MPI's variables below, with HOROVOD_CONTROLLER=mpi
torchrun       RANK                 WORLD_SIZE            LOCAL_RANK
OpenMPI        OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_SIZE  OMPI_COMM_WORLD_LOCAL_RANK
MPICH (Hydra)  PMI_RANK             PMI_SIZE              MPI_LOCALRANKID
PMIx           PMIX_RANK            (PMI_SIZE)            (none)
SLURM srun     SLURM_PROCID         SLURM_NTASKS          SLURM_LOCALID
=============  ===================  ====================  ==========================

The workers on this node (``local_size``) come from HOROVOD_LOCAL_SIZE, LOCAL_WORLD_SIZE,
OMPI_COMM_WORLD_LOCAL_SIZE, MPI_LOCALNRANKS or SLURM_NTASKS_PER_NODE; where a launcher gives
none, the whole world is taken to share the node (the safe guess for the thread count).
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
_MPI_LAUNCHERS = ("openmpi", "mpich", "pmix")
# Workers on this node, per launcher.
_LOCAL_SIZE = {"horovod": "HOROVOD_LOCAL_SIZE", "torchrun": "LOCAL_WORLD_SIZE",
               "openmpi": "OMPI_COMM_WORLD_LOCAL_SIZE", "mpich": "MPI_LOCALNRANKS",
               "slurm": "SLURM_NTASKS_PER_NODE"}


@dataclass(frozen=True)
class Identity:
    """Where this process sits in the job, and which launcher said so."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"
    local_size: int = 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @property
    def speaks_for_node(self) -> bool:
        """The first rank on its node: it says what every rank of the node would say alike
        (bad input: the same config, the same files), once instead of once per rank."""
        return self.local_rank == 0


def from_environment(env: Mapping[str, str] | None = None) -> Identity:
    """Read the identity a launcher put in the environment (single process if none did)."""
    env = os.environ if env is None else env
    for launcher, rank_var, size_var, local_var in _LAUNCHERS:
        if rank_var not in env:
            continue
        size = int(env[size_var]) if size_var and size_var in env else 1
        local = int(env[local_var]) if local_var and local_var in env else 0
        # SLURM writes "4" or "4(x2)" (4 tasks on each of 2 nodes).
        local_size = env.get(_LOCAL_SIZE.get(launcher, ""), "").split("(")[0]
        # horovodrun's MPI controller starts the workers with mpirun: MPI's variables, plus
        # Horovod's own HOROVOD_CONTROLLER=mpi (launch/horovodrun.sh exports it).
        if launcher in _MPI_LAUNCHERS and env.get("HOROVOD_CONTROLLER") == "mpi":
            launcher = "horovod"
        return Identity(int(env[rank_var]), size, local, launcher,
                        int(local_size) if local_size.isdigit() else size)
    return Identity()


def horovod_elastic(env: Mapping[str, str] | None = None) -> bool:
    """Whether horovodrun started this process in elastic mode (--min-np/--max-np/
    --host-discovery-script)."""
    return (os.environ if env is None else env).get("HOROVOD_ELASTIC") == "1"
