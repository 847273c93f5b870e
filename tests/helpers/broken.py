"""A user's mistakes, as code: models whose output cannot fit the task and Datasets whose
items cannot be trained on. Each takes its mistake by name, so a table of cases names them."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from trainer import Callback

FEATURES, CLASSES = 8, 4


class Model(nn.Module):
    """A small classifier over FEATURES inputs whose ``forward`` makes the mistake ``kind``."""

    def __init__(self, kind: str = "fine", in_features: int = FEATURES,
                 num_classes: int = CLASSES) -> None:
        super().__init__()
        self.kind = kind
        self.layer = nn.Linear(in_features, num_classes)
        self.unused = nn.Linear(2, 2)  # never used: DDP must be told (find_unused_parameters)
        if kind == "frozen":
            self.requires_grad_(False)
        if kind == "constructor":
            raise RuntimeError("the user's own __init__ failed")

    def forward(self, x: torch.Tensor):
        out = self.layer(x.flatten(1))
        kind = self.kind
        if kind == "extra row":
            return torch.cat([out, out[:1]])
        if kind == "scalar":
            return out.mean()
        if kind == "one per sample":
            return out[:, 0]
        if kind == "tuple":
            return out, out
        if kind == "dict":
            return {"logits": out}
        if kind == "integer":
            return out.argmax(dim=1)
        if kind == "detached":
            return out.detach()
        if kind == "raises":
            raise ValueError("the user's own forward failed")
        return out


class Items(Dataset):
    """``n`` samples of FEATURES features and a label in 0..CLASSES-1, whose items make the
    mistake ``kind`` (at ``at``, where one item is wrong)."""

    def __init__(self, kind: str = "fine", n: int = 64, at: int = 5) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, FEATURES, generator=generator)
        self.y = torch.arange(n) % CLASSES
        self.kind, self.n, self.at = kind, n, at

    def __len__(self) -> int:
        return self.n + 10 if self.kind == "len too big" else self.n

    def __getitem__(self, i: int):
        x, y, kind = self.x[i], int(self.y[i]), self.kind
        if kind == "float labels":
            return x, float(y) + 0.5
        if kind == "integral float labels":
            return x, float(y)
        if kind == "labels 10..":
            return x, y + 10
        if kind == "negative label" and i == self.at:
            return x, -1
        if kind == "None item" and i == self.at:
            return None
        if kind == "None label" and i == self.at:
            return x, None
        if kind == "string labels":
            return x, f"class {y}"
        if kind == "ragged" and i == self.at:
            return x[:-1], y
        if kind == "wide input":
            return torch.cat([x, x]), y
        if kind == "raises" and i == self.at:
            raise KeyError(f"the user's own __getitem__ failed on {i}")
        return x, y



class RaisingCallback(Callback):
    """A callback whose ``on_step_end`` raises once ``step`` steps are done."""

    def __init__(self, step: int = 3) -> None:
        self.step = step

    def on_step_end(self, run) -> None:
        if run.progress.step >= self.step:
            raise RuntimeError("the user's own on_step_end failed")


class StopOnOneRank(Callback):
    """Asks the run to stop on rank ``rank`` only, once ``step`` steps are done."""

    def __init__(self, rank: int = 0, step: int = 3) -> None:
        self.rank, self.step = rank, step

    def on_step_end(self, run) -> None:
        if run.backend.rank == self.rank and run.progress.step == self.step:
            run.request_stop(f"rank {self.rank} asked to stop at step {self.step}")
