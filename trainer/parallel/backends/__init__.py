"""Pick and build the data-parallel backend named by ``dist.backend``."""

from __future__ import annotations

import torch

from trainer.errors import UserError
from trainer.parallel import identity
from trainer.parallel.backends.base import Backend

__all__ = ["Backend", "build_backend", "choose"]

NAMES = ("auto", "torch", "horovod", "none")


def choose(name: str, env: identity.Identity) -> str:
    """The backend ``dist.backend=name`` means in an environment that says ``env``."""
    if name not in NAMES:
        raise UserError(f"dist.backend={name!r} is unknown; use one of: {', '.join(NAMES)}")
    if name != "auto":
        return name
    if env.launcher == "horovod":
        return "horovod"
    # torchrun, mpirun/mpiexec (OpenMPI, MPICH, PMIx) and srun all run torch.distributed;
    # a launcher with a single rank is just one process.
    return "torch" if env.world_size > 1 else "none"


def build_backend(cfg, device: torch.device, accumulate: int = 1) -> Backend:
    """Initialise the chosen backend; every collective is bounded by ``dist.timeout``."""
    env = identity.from_environment()
    name = choose(cfg.backend, env)
    if cfg.threads_per_worker is not None:
        # MPI launchers leave torch with one intra-op thread; this puts the number back.
        torch.set_num_threads(cfg.threads_per_worker)
    if name == "none":
        return Backend(device, identity.Identity())
    if name == "torch":
        from trainer.parallel.backends.torch_dist import TorchDistributed

        return TorchDistributed(cfg, device, env)
    from trainer.parallel.backends.horovod import Horovod

    return Horovod(cfg, device, accumulate)
