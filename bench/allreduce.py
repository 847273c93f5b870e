"""Allreduce bandwidth of one backend, run under its launcher (torchrun or horovodrun).

    torchrun --standalone --nproc-per-node=2 bench/allreduce.py --backend torch
    horovodrun -np 2 -H localhost:2 --gloo python bench/allreduce.py --backend horovod

Prints one JSON line from rank 0: the bus bandwidth of summing a float32 tensor over all
workers (bytes x 2(n-1)/n per second, the figure NCCL's tests report), and, for comparison,
the bandwidth of copying the same tensor in memory.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["torch", "horovod"], required=True)
    parser.add_argument("--megabytes", type=float, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tensor = torch.ones(int(args.megabytes * 2**20 / 4))
    if args.backend == "torch":
        import torch.distributed as dist

        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()

        def reduce() -> None:
            dist.all_reduce(tensor)

        barrier = dist.barrier
    else:
        import horovod.torch as hvd

        hvd.init()
        rank, world = hvd.rank(), hvd.size()

        def reduce() -> None:
            hvd.allreduce_(tensor, op=hvd.Sum, name="bench")

        barrier = hvd.barrier
    reduce()  # warm up connections and buffers
    barrier()
    start = time.perf_counter()
    for _ in range(args.repeats):
        reduce()
    barrier()
    seconds = (time.perf_counter() - start) / args.repeats
    size = tensor.numel() * 4
    target = torch.empty_like(tensor)
    copy_start = time.perf_counter()
    for _ in range(args.repeats):
        target.copy_(tensor)
    copy_seconds = (time.perf_counter() - copy_start) / args.repeats
    if rank == 0:
        print(json.dumps({
            "bus_gb_per_s": size * 2 * (world - 1) / world / seconds / 1e9,
            "copy_gb_per_s": size / copy_seconds / 1e9,
            "ms_per_allreduce": seconds * 1e3,
        }))


if __name__ == "__main__":
    main()
