"""The MNIST job under PyTorch Lightning, for bench/peers.py (``pip install -e '.[bench]'``).

    python bench/peer_lightning.py --root DIR [--epochs 3] [--threads 1] [--out DIR]
                                   [--max-steps N]
    torchrun --standalone --nproc-per-node=2 bench/peer_lightning.py --root DIR ...

The same model, initial weights, optimizer, batches and order as bench/plain_loop.py
(bench/mnist_job.py), written as a LightningModule and run by ``lightning.Trainer`` with its
defaults (its logger, a checkpoint and a validation pass every epoch, ``self.log`` of the loss
every 50 steps) except two that favour Lightning: no progress bar and no model summary. The
batches come from an iterable data set of whole batches (``batch_size=None``), so no per-sample
collation slows it; under torchrun Lightning's DDP strategy (Gloo on the CPU) runs it and each
worker reads its own slice of every global batch. Training time: each epoch from its first
batch's start to its last batch's end (validation and checkpoints excluded).
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import mnist_job as job  # noqa: E402
from bench.lockstep import Turns  # noqa: E402


class Batches(IterableDataset):
    """Each pass is the next epoch's batches for this worker."""

    def __init__(self, x, y, global_batch: int, seed: int) -> None:
        self.x, self.y, self.global_batch, self.seed, self.epoch = x, y, global_batch, seed, 0

    def __len__(self) -> int:
        return len(self.x) // self.global_batch

    def __iter__(self):
        self.epoch += 1
        return job.batches(self.x, self.y, self.global_batch, self.seed, self.epoch - 1)


class TestSet(IterableDataset):
    def __init__(self, x, y) -> None:
        self.x, self.y = x, y

    def __iter__(self):
        for i in range(0, len(self.x), 1000):
            yield self.x[i : i + 1000].float().div_(255), self.y[i : i + 1000]


class MNISTModule(L.LightningModule):
    def __init__(self, seed: int) -> None:
        super().__init__()
        self.net = job.model(seed)
        self.correct = self.seen = 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.correct += int((self.net(x).argmax(1) == y).sum())
        self.seen += len(y)

    def on_validation_epoch_start(self) -> None:
        self.correct = self.seen = 0

    def configure_optimizers(self):
        return job.optimizer(self.net)


class Timing(L.Callback):
    """Training time, and the turns under the lockstep (bench/lockstep.py)."""

    def __init__(self) -> None:
        self.clock, self.startup, self.steps = job.Clock(), None, 0
        self.turns = Turns.from_env()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self.startup is None:
            self.startup = job.process_age()
        if batch_idx == 0:
            self.clock.start()
            self.turns.resume()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        if batch_idx == trainer.num_training_batches - 1:
            self.turns.pause()
            self.clock.stop()
        else:
            self.turns.step(self.steps)

    def on_train_end(self, trainer, module) -> None:
        self.clock.stop()  # a run stopped by --max-steps mid-epoch (no-op otherwise)


def main() -> None:
    args = job.arguments(__doc__)
    x_train, y_train, x_test, y_test = job.load(args.root)
    module, timing = MNISTModule(args.seed), Timing()
    rank, size = job.world()
    trainer = L.Trainer(
        accelerator="cpu", devices=size, num_nodes=1, strategy="ddp" if size > 1 else "auto",
        max_epochs=args.epochs, max_steps=args.max_steps or -1, log_every_n_steps=50,
        default_root_dir=str(args.out),
        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
        callbacks=[timing],
    )
    trainer.fit(module,
                DataLoader(Batches(x_train, y_train, args.batch, args.seed), batch_size=None),
                DataLoader(TestSet(x_test, y_test), batch_size=None))
    accuracy = module.correct / max(module.seen, 1)  # rank 0's share under DDP
    job.report(timing.steps * args.batch, timing.clock.total, timing.startup, accuracy,
               timing.turns)


if __name__ == "__main__":
    main()
