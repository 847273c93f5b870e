"""The anchor for bench/scaling.py: a plain hand-written DistributedDataParallel loop.

Run under torchrun (any number of workers); prints one JSON line with the global samples/s.
Same models, data tensors, per-worker batch and thread count as the trainer runs it is
compared with.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer_recipes.asl.model import ASLCNN  # noqa: E402
from trainer_recipes.mnist.data import MNISTData  # noqa: E402
from trainer_recipes.mnist.model import MLP  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["mlp", "cnn"], required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--batch-per-worker", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = MLP() if args.model == "mlp" else ASLCNN(num_classes=10)
    model = DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = MNISTData(args.root, download=False)
    x_all, y_all = data.train.inputs, data.train.targets
    b, global_b = args.batch_per_worker, args.batch_per_worker * world
    perm = torch.randperm(len(x_all))
    dist.barrier()
    start = time.perf_counter()
    for step in range(args.steps):
        idx = perm[step * global_b + rank * b : step * global_b + (rank + 1) * b]
        loss = F.cross_entropy(model(x_all[idx].float().div_(255)), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            loss.item()
    dist.barrier()
    seconds = time.perf_counter() - start
    if rank == 0:
        print(json.dumps({"samples_per_sec": args.steps * global_b / seconds}))
    del model, opt  # DDP holds the process group: free it before tearing the group down
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
