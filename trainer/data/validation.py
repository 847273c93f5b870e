"""The validation split: what a run chooses its model on, so that the test split is read once.

Early stopping, ``best.pt``, the sweep report's targets and the LR finder select on the
validation split; the test split is evaluated once, at the end, on the final and on the
selected model. A data object either brings its own validation split (``data.val``: a
``valid/`` folder, ``trainer.data.Datasets(train, test, val=...)``) or a share of its training
rows is held out here (``data.val_fraction``):

- the rows are a function of the training labels, the fraction and ``trainer.seed`` alone, so
  every rank of any world size, and a resumed run, hold out the same rows;
- the share is taken from each class in proportion (its largest remainders rounded up), where
  the labels are one class index per row: the validation split has the classes' mix of the
  training data (a random share otherwise: regression targets, sequences, a Dataset without
  a ``targets`` attribute, whose labels would have to be read item by item);
- both parts keep the rows' order, and remember which row of the data as given each row is
  (``TensorSplit.rows``, a ``Subset``'s ``indices``), so a message names the row a user sees.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Subset

from trainer.data.datasets import DatasetSplit, given_row
from trainer.data.memory import TensorSplit, seeded_generator
from trainer.errors import UserError

# Mixed into the seed: the held-out rows are not drawn from the stream of any epoch's order.
_STREAM = 0x76616C


def hold_out(split: Any, fraction: float, seed: int) -> tuple[Any, Any, bool]:
    """``(training rows, validation rows, stratified)``: ``round(fraction * len(split))`` rows
    of ``split`` held out."""
    n = len(split)
    n_val = round(fraction * n)
    if n_val < 1 or n_val >= n:
        raise UserError(
            f"data.val_fraction={fraction} of the {n:,} training rows leaves "
            f"{'no validation row' if n_val < 1 else 'no training row'}; use a fraction that "
            "leaves both, or data.val_fraction=0 for no validation split (selection then on the "
            "training loss)")
    labels = class_labels(split)
    chosen = _chosen_rows(labels, n, n_val, seeded_generator(seed, _STREAM))
    keep = torch.ones(n, dtype=torch.bool)
    keep[chosen] = False
    kept = keep.nonzero().squeeze(1)
    return _subset(split, kept), _subset(split, chosen), labels is not None


def class_labels(split: Any) -> torch.Tensor | None:
    """One class index per row (an integer tensor of ``len(split)``), where the split has
    them without reading its items; else None."""
    if isinstance(split, TensorSplit):
        labels = split.targets
    else:
        labels = getattr(getattr(split, "dataset", None), "targets", None)
        if labels is not None and not isinstance(labels, torch.Tensor):
            try:
                labels = torch.as_tensor(labels)
            except (TypeError, ValueError, RuntimeError):
                return None
    if (not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point()
            or labels.is_complex() or len(labels) != len(split)):
        return None
    return labels.cpu()


def _chosen_rows(labels: torch.Tensor | None, n: int, n_val: int,
                 generator: torch.Generator) -> torch.Tensor:
    """The held-out rows, in order: from each class its share of ``n_val`` (largest
    remainders), or ``n_val`` rows drawn from all where there are no class labels."""
    if labels is None:
        return torch.randperm(n, generator=generator)[:n_val].sort().values
    classes, counts = labels.unique(return_counts=True)
    quota = counts.double() * n_val / n
    take = quota.floor().long()
    short = n_val - int(take.sum())
    # Largest remainders first (ties: the smaller class index), each one more row.
    take[torch.sort(quota - take, descending=True, stable=True).indices[:short]] += 1
    chosen = []
    for label, k in zip(classes.tolist(), take.tolist(), strict=True):
        rows = (labels == label).nonzero().squeeze(1)
        chosen.append(rows[torch.randperm(len(rows), generator=generator)[:k]])
    return torch.cat(chosen).sort().values


def _subset(split: Any, rows: torch.Tensor) -> Any:
    """``split``'s ``rows`` as a split of the same kind, knowing where each row came from."""
    if isinstance(split, TensorSplit):
        origin = split.rows[rows] if split.rows is not None else rows
        where = rows.to(split.inputs.device)
        return TensorSplit(split.inputs.index_select(0, where),
                           split.targets.index_select(0, where), rows=origin)
    subset = Subset(split.dataset, rows.tolist())
    if (labels := class_labels(split)) is not None:
        subset.targets = labels[rows]  # (a second hold-out, a report, can read them too)
    return DatasetSplit(subset, split.workers, split.device, split.name)


def origin(split: Any, row: int) -> int:
    """The index in the data as given (the user's file, their Dataset) of ``split``'s ``row``."""
    if isinstance(split, TensorSplit):
        return int(split.rows[row]) if split.rows is not None else row
    return given_row(split.dataset, row) if isinstance(split, DatasetSplit) else row
