"""Pick and build the data-parallel backend named by ``dist.backend``."""

from __future__ import annotations

import logging
import os

import torch

from trainer.parallel import identity
from trainer.parallel.backends.base import Backend

__all__ = ["Backend", "build_backend", "choose"]

log = logging.getLogger(__name__)


def choose(name: str, env: identity.Identity) -> str:
    """The backend ``dist.backend=name`` (one of the schema's, trainer.config.schema.BackendName)
    means in an environment that says ``env``."""
    if name != "auto":
        return str(name)
    if env.launcher == "horovod":  # horovodrun, either controller (trainer.parallel.identity)
        return "horovod"
    # torchrun, mpirun/mpiexec (OpenMPI, MPICH, PMIx) and srun all run torch.distributed;
    # a launcher with a single rank is just one process.
    return "torch" if env.world_size > 1 else "none"


def threads_per_worker(given: int | None, env: identity.Identity,
                       environ=os.environ) -> tuple[int | None, str]:
    """The intra-op threads for this worker, and why: ``dist.threads_per_worker`` if set, else
    the launcher's or the user's OMP_NUM_THREADS (torch reads it itself: None), else the CPUs
    this process may use divided among the workers on this node (a launcher that already
    bound each worker to its own cores, as srun and mpirun can, gets those cores)."""
    if given is not None:
        return given, "dist.threads_per_worker"
    if "OMP_NUM_THREADS" in environ:
        return None, f"OMP_NUM_THREADS={environ['OMP_NUM_THREADS']}"
    if env.world_size == 1:
        return None, "torch's default"
    total = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    if usable < total:
        return max(1, usable), f"the {usable} CPU(s) the launcher bound this worker to"
    local = max(1, env.local_size)
    return max(1, total // local), f"{total} CPU(s) / {local} worker(s) on this node"


def build_backend(cfg, device: torch.device, accumulate: int = 1) -> Backend:
    """Initialise the chosen backend; every collective is bounded by ``dist.timeout``."""
    env = identity.from_environment()
    name = choose(cfg.backend, env)
    threads, why = threads_per_worker(cfg.threads_per_worker, env)
    if threads is not None:
        torch.set_num_threads(threads)
    if env.is_primary and env.world_size > 1:
        log.info("threads: %d intra-op thread(s) per worker (%s)", torch.get_num_threads(), why)
    if name == "none":
        return Backend(device, identity.Identity())
    if name == "torch":
        from trainer.parallel.backends.torch_dist import TorchDistributed

        backend = TorchDistributed(cfg, device, env)
    else:
        from trainer.parallel.backends.horovod import Horovod

        backend = Horovod(cfg, device, accumulate)
    if backend.is_primary:
        log.info("workers: %d, through %s", backend.world_size, backend.description)
    return backend
