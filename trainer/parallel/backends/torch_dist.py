"""torch.distributed: NCCL on GPUs, Gloo on the CPU, DistributedDataParallel for gradients.

Launched by torchrun (env:// rendezvous), mpirun/mpiexec (rank 0's address shared over MPI) or
srun (first host of the allocation). torch's own ``mpi`` process-group backend is not built
into the PyPI wheels, so MPI only launches the processes and shares the address; the
collectives run over Gloo or NCCL.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import re
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from trainer.errors import UserError, WorkerLost
from trainer.parallel.backends.base import Backend
from trainer.parallel.backends.rendezvous import rendezvous
from trainer.parallel.identity import Identity

# What Gloo and NCCL say when a peer died or a collective ran past dist.timeout.
_PEER_LOST = re.compile(
    r"connection (reset|closed|refused)|timed out|timeout|broken pipe|gloo|nccl", re.IGNORECASE
)


def _buffer_sync(sync: bool) -> dict[str, bool]:
    """DDP's per-forward buffer broadcast switch, under whichever name this torch uses."""
    if sync:
        return {}  # the default in every version
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers":
            False}


# DDP's error at the step after a backward left some parameters without a gradient.
_UNUSED = re.compile(r"parameters that were not used in producing (the )?loss")

# One TCP store per rendezvous address for the life of the process, and the runs started on it.
_STORES: dict[tuple, Any] = {}
_RUNS: dict[tuple, int] = {}


class TorchDistributed(Backend):
    name = "torch"

    def __init__(self, cfg, device: torch.device, ident: Identity) -> None:
        if device.type == "cuda":
            device = torch.device("cuda", ident.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
        super().__init__(device, ident)
        self.cfg = cfg
        addr, port = rendezvous(ident)
        timeout = datetime.timedelta(seconds=cfg.timeout)
        try:
            self._join(addr, port, ident, device, timeout)
        except (dist.DistError, RuntimeError) as exc:
            if not (isinstance(exc, dist.DistError) or _PEER_LOST.search(str(exc))):
                raise
            detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise WorkerLost(
                f"rank {ident.rank} of {ident.world_size} ({ident.launcher}): the workers did not "
                f"all meet at {addr}:{port} within dist.timeout={cfg.timeout}s ({detail}); launch "
                "every worker with the same world size, and let each reach that address"
            ) from None

    def _join(self, addr: str, port: int, ident: Identity, device: torch.device,
              timeout: datetime.timedelta) -> None:
        # Our own store, namespaced by torchrun's restart count: after a --max-restarts
        # restart the agent's store still holds the dead attempt's Gloo addresses, and ranks
        # that read them fail with "connection refused". Under torchrun the agent serves the
        # store (every rank is a client); otherwise rank 0 serves it.
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        key = (addr, port, ident.world_size)
        if key not in _STORES:
            _STORES[key] = dist.TCPStore(
                addr, port, ident.world_size, is_master=not agent_store and ident.rank == 0,
                timeout=timeout,
            )
        store = _STORES[key]
        # And by how many runs this process has started (trainer.fit called twice: every rank
        # calls it alike): a second group must not read the first one's keys. The store stays
        # open between them (rank 0 cannot serve a second one on the same port).
        _RUNS[key] = _RUNS.get(key, 0) + 1
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            store=dist.PrefixStore(f"trainer/attempt_{attempt}/run_{_RUNS[key]}", store),
            rank=ident.rank,
            world_size=ident.world_size,
            timeout=timeout,
            device_id=device if device.type == "cuda" else None,
        )

    @property
    def description(self) -> str:
        return f"torch.distributed ({dist.get_backend()})"

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        # DDP broadcasts rank 0's parameters and buffers here, then overlaps the gradient
        # all-reduce (in buckets of bucket_cap_mb) with the backward pass.
        ddp = DistributedDataParallel(
            model,
            device_ids=[self.device] if self.device.type == "cuda" else None,
            bucket_cap_mb=self.cfg.bucket_cap_mb,
            gradient_as_bucket_view=self.cfg.gradient_as_bucket_view,
            static_graph=self.cfg.static_graph,
            find_unused_parameters=self.cfg.find_unused_parameters,
            **_buffer_sync(self.cfg.sync_buffers),
        )
        hooks = {"none": None, "fp16": default_hooks.fp16_compress_hook,
                 "bf16": default_hooks.bf16_compress_hook}  # (the schema's Compression)
        if self.cfg.op != "average":
            raise UserError(f"dist.op={self.cfg.op} is Horovod's; torch.distributed averages "
                            "(use dist.op=average, or launch with horovodrun)")
        # fp16/bf16: gradients travel in 16 bits and are averaged back into fp32: half the
        # bytes, at the price of rounding (runs no longer match one worker bit for bit).
        if hooks[self.cfg.compression] is not None:
            ddp.register_comm_hook(None, hooks[self.cfg.compression])
        return ddp

    def no_sync(self, model: torch.nn.Module):
        return model.no_sync() if isinstance(model, DistributedDataParallel) else (
            contextlib.nullcontext()
        )

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        dist.barrier()

    def explain_failure(self, exc: BaseException) -> str | None:
        text = str(exc)
        if not (isinstance(exc, dist.DistError) or (
            isinstance(exc, RuntimeError) and _PEER_LOST.search(text)
        )):
            return None
        detail = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return (
            f"rank {self.rank} lost contact with another worker ({detail[:200]}); every worker "
            "stops. See the other workers' output for the cause, then restart with "
            "trainer.resume=auto to continue from the last checkpoint"
        )

    def user_error(self, exc: BaseException) -> str | None:
        if isinstance(exc, RuntimeError) and _UNUSED.search(str(exc)):
            return ("the model has parameters that took no part in the loss, which DDP "
                    "cannot average: set dist.find_unused_parameters=true (DDP then searches "
                    "the graph every step), or remove those parameters (or set their "
                    "requires_grad=False)")
        return None

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
