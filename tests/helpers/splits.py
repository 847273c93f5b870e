"""Data whose every read is recorded: which rows training, the evaluations during training
and the final test read, on each rank (tests/data/test_validation.py).

Row ``i`` of a ``Numbered`` Dataset is ``([i / n, noise...], label)``; the Dataset logs each
index it serves with the phase the run is in: "train" while the model is in training mode (the
loader reads each batch then), "eval" while an evaluation holds it in eval mode; the
``RecordReads`` callback hands it the model and writes ``rows-rank<r>.json``.
"""

from __future__ import annotations

import json

import torch
from torch.utils.data import Dataset

import trainer
from trainer.data import Datasets
from trainer.data.validation import origin

MODEL: list = [None]  # the run's model, whose mode says who is reading
READS: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}


class Numbered(Dataset):
    def __init__(self, n: int, name: str, offset: int = 0, classes: int = 3) -> None:
        self.n, self.name, self.offset = n, name, offset
        self.targets = torch.arange(n) % classes  # (so a hold-out needs no reads)
        noise = torch.randn(n, 3, generator=torch.Generator().manual_seed(offset),
                            dtype=torch.float64)
        self.features = torch.cat([torch.arange(n, dtype=torch.float64)[:, None] / n, noise], 1)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        model = MODEL[0]
        phase = "build" if model is None else "train" if model.training else "eval"
        READS[self.name].append((phase, index))
        return self.features[index], self.targets[index]


class NumberedData(Datasets):
    """Fresh records; ``val``: rows of a Dataset of its own (else the run holds some out)."""

    def __init__(self, train: int = 120, test: int = 45, val: int | None = None) -> None:
        READS.update(train=[], test=[], val=[])
        MODEL[0] = None
        super().__init__(Numbered(train, "train"), Numbered(test, "test", offset=1000),
                         val=Numbered(val, "val", offset=2000) if val else None)


class RecordReads(trainer.Callback):
    def __init__(self) -> None:
        self.test_reads_in_training = 0

    def on_fit_start(self, run) -> None:
        MODEL[0] = run.model

    def on_step_end(self, run) -> None:
        self.test_reads_in_training = len(READS["test"])

    def on_eval_end(self, run, metrics) -> None:
        self.test_reads_in_training = len(READS["test"])

    def on_fit_end(self, run, metrics) -> None:
        def rows(split) -> list[int]:
            return sorted(origin(split, i) for i in range(len(split))) if split else []

        record = {
            "train_rows": rows(run.data.train), "val_rows": rows(run.data.val),
            "trained_on": sorted({i for phase, i in READS["train"] if phase == "train"}),
            "evaluated_on": sorted({i for phase, i in READS["train"] + READS.get("val", [])
                                    if phase == "eval"}),
            "test_reads_in_training": self.test_reads_in_training,
            "test_reads": len(READS["test"]),
            "best_step": metrics.get("best_step"), "steps": metrics["steps"],
        }
        (run.run_dir / f"rows-rank{run.rank}.json").write_text(json.dumps(record))
