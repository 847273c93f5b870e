"""The hand-written MNIST loop that bench/overhead.py and bench/peers.py hold trainer against.

    python bench/plain_loop.py --root DIR [--epochs 3] [--batch 128] [--threads 1] [--out DIR]
                               [--max-steps N]
    torchrun --standalone --nproc-per-node=2 bench/plain_loop.py --root DIR ...   (DDP, Gloo)

What a user writes without a framework, and nothing more: MNIST's IDX files read into uint8
tensors, the MLP 784-512-512-10, SGD (lr 0.05, momentum 0.9); each epoch one shuffled
permutation (the one trainer draws, so that both sides make the same updates) cut into batches
gathered from the in-memory tensors (bench/mnist_job.py), ``zero_grad(set_to_none=True)``,
forward, backward, step, the loss read and printed every 50 steps; at each epoch end a test-set
evaluation and a checkpoint (model and optimizer). Under torchrun the model is wrapped in DDP
over Gloo and each worker takes its slice of every global batch. The last line printed is JSON:
training samples/s (the steps alone, evaluation and checkpoints excluded, as trainer's
metrics.json counts them), training seconds, and ``startup_s``, process start to first step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import mnist_job as job  # noqa: E402
from bench.lockstep import Turns  # noqa: E402


def main() -> None:
    args = job.arguments(__doc__)
    x_train, y_train, x_test, y_test = job.load(args.root)
    model = job.model(args.seed)
    rank, size = job.world()
    if size > 1:
        dist.init_process_group("gloo")
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = job.optimizer(model)

    turns = Turns.from_env()  # taking turns with the other contenders (bench/lockstep.py)
    startup, clock, step, accuracy = job.process_age(), job.Clock(), 0, 0.0
    for epoch in range(args.epochs):
        if args.max_steps and step >= args.max_steps:
            break
        clock.start()
        turns.resume()
        left = args.max_steps - step if args.max_steps else 0
        for x, y in job.batches(x_train, y_train, args.batch, args.seed, epoch, left):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            # Under the lockstep only, every few steps: the next one's turn (else a no-op call,
            # 0.06 us of a 5 ms step).
            turns.step(step)
            if step % 50 == 0 and rank == 0:
                print(f"step {step} loss {loss.item():.4f}")
        turns.pause()
        clock.stop()
        accuracy = job.accuracy(model, x_test, y_test)
        if rank == 0:
            print(f"epoch {epoch + 1} test accuracy {accuracy:.4f}")
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()},
                       args.out / "checkpoint.pt")
    job.report(step * args.batch, clock.total, startup, accuracy, turns)
    if size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
