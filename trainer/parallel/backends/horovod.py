"""Horovod: every Horovod-specific line of the project is in this file.

Launched by ``horovodrun -np N trainer ...`` (Gloo or MPI controller) or by ``mpirun`` with
``dist.backend=horovod``. Gradients are averaged by ``hvd.DistributedOptimizer`` (allreduce
per parameter as its gradient is ready, fused into buffers), with optional fp16 compression and
Adasum; rank 0's weights and optimizer state are broadcast before the first step.
Build Horovod for the installed torch with ``launch/install_horovod.sh``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from trainer.compat import silence_horovod_optimizer
from trainer.errors import UserError
from trainer.parallel.backends.base import Backend
from trainer.parallel.identity import Identity

try:
    import horovod.torch as hvd
except ImportError:  # pragma: no cover - depends on the machine
    hvd = None


def _require_horovod():
    if hvd is None:
        raise UserError(
            "dist.backend=horovod but Horovod is not installed: run launch/install_horovod.sh "
            "(it builds Horovod 0.28.1 for the installed torch), or use dist.backend=torch"
        )
    return hvd


class Horovod(Backend):
    name = "horovod"

    def __init__(self, cfg, device: torch.device, accumulate: int) -> None:
        _require_horovod().init()
        super().__init__(device)
        self.cfg, self.accumulate = cfg, accumulate
        self.rejoin()

    def rejoin(self) -> None:
        """Read this worker's place from Horovod: at start, and after an elastic reset (Horovod
        re-initialised with workers added or removed: rank, size and local rank change)."""
        self.identity = Identity(hvd.rank(), hvd.size(), hvd.local_rank(), "horovod",
                                 hvd.local_size())
        if self.device.type == "cuda":
            self.device = torch.device("cuda", hvd.local_rank() % torch.cuda.device_count())
            torch.cuda.set_device(self.device)

    @property
    def description(self) -> str:
        return f"Horovod ({'MPI' if hvd.mpi_enabled() else 'Gloo'} controller)"

    @property
    def can_split_steps(self) -> bool:
        # DistributedOptimizer all-reduces after backward_passes_per_step (= accumulate)
        # backward passes; an extra split would all-reduce half a step.
        return False

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer,
                       model: torch.nn.Module) -> torch.optim.Optimizer:
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        compression = {"none": hvd.Compression.none, "fp16": hvd.Compression.fp16}
        ops = {"average": hvd.Average, "adasum": hvd.Adasum}
        if self.cfg.compression not in compression:  # (the schema allows torch's bf16 too)
            raise UserError(f"dist.compression={self.cfg.compression}: Horovod compresses to "
                            "fp16 only; use dist.compression=none or fp16")
        return hvd.DistributedOptimizer(
            optimizer,
            named_parameters=model.named_parameters(),
            compression=compression[self.cfg.compression],
            backward_passes_per_step=self.accumulate,
            op=ops[self.cfg.op],
        )

    def release(self, optimizer: torch.optim.Optimizer) -> None:
        silence_horovod_optimizer(optimizer)

    @contextlib.contextmanager
    def step_context(self, optimizer: torch.optim.Optimizer):
        # Finish the gradient allreduce before a loss scaler unscales (or anything reads)
        # the gradients, then step without a second synchronisation.
        optimizer.synchronize()
        with optimizer.skip_synchronize():
            yield

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return hvd.allreduce_(tensor, op=hvd.Sum)

    def broadcast_object(self, obj: Any) -> Any:
        # A fixed name: Horovod matches collectives by name, and its default (the object's
        # type) differs between rank 0's payload and the other ranks' None.
        return hvd.broadcast_object(obj, root_rank=0, name="trainer.broadcast_object")

    def all_gather_object(self, obj: Any) -> list[Any]:
        return hvd.allgather_object(obj, name="trainer.all_gather_object")

    def barrier(self) -> None:
        hvd.barrier()

    def explain_failure(self, exc: BaseException) -> str | None:
        if type(exc).__name__ not in ("HorovodInternalError", "HostsUpdatedInterrupt"):
            return None
        return (
            f"rank {self.rank}: Horovod lost a worker ({str(exc).strip()[:200]}); every worker "
            "stops. Restart with trainer.resume=auto to continue from the last checkpoint"
        )

    def close(self) -> None:
        if hvd.is_initialized():
            hvd.shutdown()
