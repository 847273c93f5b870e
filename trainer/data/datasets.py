"""Any map-style ``torch.utils.data.Dataset`` as a split, and ``trainer.data.Datasets``: a
train and a test Dataset as a run's data, from a config or from Python.

The framework's loader decides which rows form each batch (one permutation per (seed, epoch),
the global batch cut into one consecutive slice per rank: disjoint, equal shards, and N
workers see exactly the samples one worker sees); a :class:`DatasetSplit` only fetches those
rows, through a ``DataLoader`` whose ``batch_sampler`` is the list of row batches, so worker
processes (``workers``) read and decode while the model trains. A resumed run asks for batch
k of the epoch and gets it, whatever happened before.

What stays the user's: randomness INSIDE a Dataset (a random crop in its transform) is drawn
in whichever DataLoader worker reads the row, from a worker generator that runs on across the
run's passes, so it differs with the world size, the worker count and on resume; augment
through the data's ``augmentation`` (drawn per global batch, the same for any split) where
runs must match exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from trainer.data.batch import to_device
from trainer.data.memory import InMemoryData
from trainer.errors import UserError, add_context


class DatasetSplit:
    """One split as a map-style Dataset: items ``(input, target)``, ``(x1, x2, target)``, or
    dicts of named fields (``{"image": ..., "label": ...}``), nested as deep as you like.

    Args:
        dataset: any ``Dataset`` with ``__len__``; items are collated by torch's default
            collate (tensors, numbers, numpy arrays, strings; tuples and dicts of them).
        workers: DataLoader worker processes (0: read in the training process).
        device: where batches arrive (the training device).
    """

    def __init__(self, dataset: Dataset, workers: int = 0,
                 device: torch.device | None = None, name: str = "training") -> None:
        if workers < 0:
            raise ValueError(f"workers={workers} must be >= 0")
        try:
            len(dataset)
        except TypeError:
            raise UserError(
                f"{type(dataset).__name__} has no len(): the framework needs a map-style "
                "Dataset (__len__ and __getitem__), not an IterableDataset"
            ) from None
        self.dataset, self.workers, self.name = dataset, workers, name
        self.device = device or torch.device("cpu")
        # This split's DataLoader, its worker processes forked once and kept (see _items).
        self._rows = _Rows()
        self._loader: DataLoader | None = None
        self._busy = False

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index]

    def to(self, device: torch.device) -> DatasetSplit:
        """Batches are read on the host and arrive on ``device``."""
        return DatasetSplit(self.dataset, self.workers, device, self.name)

    def stream(self, batches: Sequence[torch.Tensor | slice]) -> Iterator:
        """Each batch of row indices (or slice), in order, as the DataLoader collates the
        items (``(inputs, targets)``, a dict, ...), on the device."""
        rows = [list(range(len(self))[b]) if isinstance(b, slice) else b.tolist() for b in batches]
        if not rows:
            return
        pin = self.device.type == "cuda"
        persistent = self.workers > 0 and not self._busy
        if persistent:
            self._busy = True
            self._rows.rows = rows
            items = iter(self._persistent_loader(pin))  # (drops what an abandoned pass left)
        else:  # another pass over this split is still open: a loader of its own
            items = iter(DataLoader(self.dataset, batch_sampler=rows,
                                    num_workers=min(self.workers, len(rows)), pin_memory=pin,
                                    generator=torch.Generator().manual_seed(0)))
        try:
            yield from self._collated(items, rows, pin)
        finally:
            if persistent:
                self._busy = False

    def close(self) -> None:
        """End the worker processes (dropping the loader ends its iterator's workers); a
        later pass forks them again."""
        self._loader = None

    def _persistent_loader(self, pin: bool) -> DataLoader:
        """The split's one DataLoader, its workers kept between passes (epochs, evaluations).

        Forking a worker per pass is what hung runs: CPython 3.11 deadlocks a forked child in
        ``PyOS_AfterFork_Child`` when another thread of the parent held the runtime's thread
        list lock at the fork (a thread starting or ending then), and a per-pass DataLoader
        forks right after the previous pass's queue threads were told to exit -- seen in about
        1 of 100 two-rank runs with DataLoader workers. Workers forked once per split, and
        queue threads that live as long as the run, leave no thread exiting at a fork."""
        if self._loader is None:
            # Its own generator: a DataLoader otherwise draws its workers' base seed from the
            # global RNG, and a resumed run (which opens the loader after restoring the RNG)
            # would then draw different dropout masks from the original run.
            self._loader = DataLoader(self.dataset, batch_sampler=self._rows,
                                      num_workers=self.workers, pin_memory=pin,
                                      persistent_workers=True,
                                      generator=torch.Generator().manual_seed(0))
        return self._loader

    def _collated(self, items: Iterator, rows: list[list[int]], pin: bool) -> Iterator:
        for batch_rows in rows:
            try:
                item = next(items)
                if isinstance(item, list | tuple) and len(item) == 2:  # (inputs, targets)
                    x, y = item
                    if not isinstance(y, torch.Tensor):
                        y = torch.as_tensor(y)
                    item = (x, y)
            except Exception as exc:
                # Said in one line where an item is the cause (None, ragged, text labels, a
                # len() beyond the data); the user's own exception from __getitem__ otherwise.
                raise bad_items(self.dataset, batch_rows, self.name, exc) from None
            if isinstance(item, tuple):
                yield to_device(item[0], self.device, pin), item[1].to(self.device,
                                                                      non_blocking=pin)
            else:  # a dict of named fields, several inputs: the structure as it collated
                yield to_device(item, self.device, pin)


class _Rows:
    """A persistent DataLoader's ``batch_sampler``: the row batches of the pass under way
    (set before each ``iter``, which reads them afresh)."""

    def __init__(self) -> None:
        self.rows: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


class Datasets(InMemoryData):
    """A run's data from map-style Datasets: items ``(input, target)``, or any structure the
    task knows how to feed (trainer/tasks.py: a dict's ``task.target_key``, several inputs).

    In a config, ``data._target_: trainer.data.Datasets`` with ``train:``, ``test:`` and
    optionally ``val:`` each a nested ``_target_`` (``torchvision.datasets.FakeData``,
    ``ImageFolder``, your own class); from Python, ``trainer.fit(..., data=(train, test))`` or
    ``data=(train, test, val)``.

    Args:
        train, test: the training split, and the test split (evaluated once, at the end).
        val: the validation split that evaluations during training, early stopping and
            best.pt use; None: ``data.val_fraction`` of ``train`` is held out for it.
        class_names: one name per class, for logs and sample images (default: the train
            set's ``classes`` attribute, as torchvision's data sets have, else "0", "1", ...).
        workers: DataLoader worker processes per training process.
        description: the line the run prints about its data (default: the classes and sizes).
    """

    def __init__(self, train: Dataset, test: Dataset, class_names: Sequence[str] | None = None,
                 workers: int = 0, description: str | None = None,
                 val: Dataset | None = None) -> None:
        if workers < 0:
            raise UserError(f"data.workers={workers} must be 0 or more")
        self.train = DatasetSplit(train, workers)
        self.test = DatasetSplit(test, workers, name="test")
        self.val = DatasetSplit(val, workers, name="validation") if val is not None else None
        names = class_names if class_names is not None else getattr(train, "classes", None)
        self.class_names = [str(n) for n in names] if names is not None else []
        self.description = description or (
            f"{_name(train)} ({len(self.train):,} samples) / "
            + (f"{_name(val)} ({len(self.val):,} samples, validation) / "
               if self.val is not None else "")
            + f"{_name(test)} ({len(self.test):,} samples)"
        )

    def as_images(self, inputs: torch.Tensor) -> torch.Tensor | None:
        """Image batches (N x 1|3 x H x W) for TensorBoard's sample predictions."""
        if inputs.dim() != 4 or inputs.shape[1] not in (1, 3):
            return None
        if inputs.dtype == torch.uint8:
            return inputs.float().div(255.0)
        x = inputs.float()
        lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
        return (x - lo) / (hi - lo).clamp_min(1e-12)  # normalised inputs back onto [0, 1]

    def state_dict(self) -> dict:
        return {"class_names": self.class_names} if self.class_names else {}


def bad_items(dataset: Dataset, rows: list[int], split: str, error: Exception) -> Exception:
    """Why a batch of ``rows`` could not be read or collated: a UserError naming the first
    item at fault and the fix, else ``error`` itself (the user's own exception)."""
    where = f"the {split} Dataset ({type(_given(dataset)).__name__})"
    first = None
    for row in rows:
        try:
            item = dataset[row]
        except IndexError as exc:
            return UserError(
                f"{where}: item {given_row(dataset, row)} raised IndexError ({exc}) though "
                f"len() is {len(_given(dataset))}: __len__ must count only the items "
                "__getitem__ can give")
        except Exception as own:  # the user's own error: theirs to see, from this item
            add_context(own, f"in {where}.__getitem__({given_row(dataset, row)})")
            return own
        problem = _item_problem(item, first)
        if problem is not None:
            return UserError(f"{where}: item {given_row(dataset, row)} {problem}")
        first = item if first is None else first
    return error


def _item_problem(item: Any, like: Any) -> str | None:
    """What keeps ``item`` from being collated with ``like`` (an earlier item), or None."""
    if item is None:
        return "is None; __getitem__ must return the sample, e.g. (input, label)"
    parts = item if isinstance(item, tuple | list) else (item,)
    if any(part is None for part in parts):
        return f"holds None ({type(item).__name__} of {len(parts)}); give every field a value"
    if isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], str | bytes):
        return (f"has the label {item[1]!r}, a string: labels are numbers (class indices "
                "0..C-1); map the names to indices in the Dataset (class_names= keeps the "
                "names for the logs)")
    if like is not None:
        shapes = [tuple(getattr(part, "shape", ())) for part in parts]
        before = like if isinstance(like, tuple | list) else (like,)
        expected = [tuple(getattr(part, "shape", ())) for part in before]
        if len(shapes) == len(expected) and shapes != expected:
            return (f"has shapes {shapes} where earlier items have {expected}: items are "
                    "stacked into a batch, so each field must have the same shape in every "
                    "item (pad or resize them in the Dataset)")
    return None


def as_data(data: Any) -> InMemoryData | None:
    """What a caller gave as ``data=`` (``trainer.fit``, ``trainer.evaluate``): a trainer data
    object, or ``(train, test)`` / ``(train, test, val)`` Datasets; None for the config's."""
    if data is None or isinstance(data, InMemoryData):
        return data
    if isinstance(data, tuple | list) and len(data) in (2, 3):
        return Datasets(data[0], data[1], val=data[2] if len(data) == 3 else None)
    raise UserError(f"data= takes a trainer data object or (train_dataset, test_dataset[, "
                    f"val_dataset]), not a {type(data).__name__}")


def _name(dataset: Any) -> str:
    return type(dataset).__name__


def _given(dataset: Any) -> Any:
    """The user's Dataset under the Subsets a held-out validation split wraps it in."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def given_row(dataset: Any, row: int) -> int:
    """``row`` of ``dataset`` as the index of the user's own Dataset."""
    while isinstance(dataset, Subset):
        row, dataset = dataset.indices[row], dataset.dataset
    return row
