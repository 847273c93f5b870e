"""The MNIST job under Hugging Face Accelerate, for bench/peers.py (``pip install -e '.[bench]'``).

    python bench/peer_accelerate.py --root DIR [--epochs 3] [--threads 1] [--out DIR]
                                    [--max-steps N]
    torchrun --standalone --nproc-per-node=2 bench/peer_accelerate.py --root DIR ...

The same model, initial weights, optimizer, batches and order as bench/plain_loop.py
(bench/mnist_job.py), in Accelerate's documented loop: ``Accelerator()``, ``prepare`` of the
model and optimizer, ``accelerator.backward``, the loss gathered and printed every 50 steps,
``accelerator.save`` of the state at each epoch end after an evaluation. The batches are this
worker's slices, handed over directly (not through a prepared DataLoader, which would add
per-sample collation). Under torchrun Accelerate wraps the model in DDP (Gloo on the CPU).
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate import Accelerator
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import mnist_job as job  # noqa: E402
from bench.lockstep import Turns  # noqa: E402


def main() -> None:
    args = job.arguments(__doc__)
    x_train, y_train, x_test, y_test = job.load(args.root)
    accelerator = Accelerator(cpu=True)
    net = job.model(args.seed)
    model, opt = accelerator.prepare(net, job.optimizer(net))

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
            accelerator.backward(loss)
            opt.step()
            step += 1
            turns.step(step)  # under the lockstep only, every few steps: the next one's turn
            if step % 50 == 0:
                mean = accelerator.gather(loss.detach()).mean()
                accelerator.print(f"step {step} loss {mean.item():.4f}")
        turns.pause()
        clock.stop()
        accuracy = job.accuracy(model, x_test, y_test)
        accelerator.print(f"epoch {epoch + 1} test accuracy {accuracy:.4f}")
        if accelerator.is_main_process:
            accelerator.save({"model": accelerator.unwrap_model(model).state_dict(),
                              "optimizer": opt.state_dict()}, args.out / "checkpoint.pt")
    job.report(step * args.batch, clock.total, startup, accuracy, turns)


if __name__ == "__main__":
    main()
