"""A Dataset's DataLoader workers are forked once per split and run, and end with the run
(trainer/data/datasets.py): a loader forked per pass hung two-rank runs about 1 in 100 (a
forked child deadlocked in CPython 3.11's after-fork code while a queue thread of the previous
pass was exiting)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

import trainer
from tests.helpers.broken import Model
from trainer.data import Datasets


class Pids(Dataset):
    """64 samples of 8 features, labels 0..3; each read leaves a file naming the split and the
    process that read it."""

    def __init__(self, folder: Path, name: str, n: int = 64) -> None:
        self.folder, self.name, self.n = folder, name, n
        self.x = torch.randn(n, 8, generator=torch.Generator().manual_seed(len(name)))
        self.y = torch.arange(n) % 4

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        (self.folder / f"{self.name}-{os.getpid()}").touch()
        return self.x[i], self.y[i]


def test_each_splits_workers_are_forked_once_and_end_with_the_run(tmp_path):
    reads = tmp_path / "reads"
    reads.mkdir()
    data = Datasets(Pids(reads, "train"), Pids(reads, "test", 32), val=Pids(reads, "val", 32),
                    workers=2)
    # 3 epochs of 4 steps, an evaluation after each: 3 passes over train and val, 1 over test.
    metrics = trainer.fit(["trainer.epochs=3", "data.batch_size=16", "logger.progress_bar=false",
                           "logger.sample_predictions=0"], model=Model(), data=data,
                          run_dir=tmp_path / "run")
    assert metrics["steps"] == 12
    pids: dict[str, set[int]] = {}
    for file in reads.iterdir():
        name, pid = file.name.split("-")
        pids.setdefault(name, set()).add(int(pid))
    # Forked per pass, the training batches would have come from 6 processes, validation's
    # from 3 (its one batch a pass goes to one worker).
    assert len(pids["train"]) == 2 and len(pids["val"]) <= 2 and len(pids["test"]) <= 2
    every = set().union(*pids.values())
    assert os.getpid() not in every
    assert not [pid for pid in every if Path(f"/proc/{pid}").exists()]  # ended, and reaped
