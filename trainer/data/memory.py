"""The in-memory data path: a whole data set as tensors, batches by slicing.

An epoch is one permutation drawn from ``(seed, epoch)`` alone, so any rank can rebuild any
epoch's order without shared RNG state, and a resumed run can continue at any sample offset
of epoch e (the position is kept in samples, so the batch may also change inside an epoch).
Each global batch of B samples is cut into ``world_size`` consecutive slices of B / world_size,
one per rank: the ranks' shards are disjoint, every rank sees the same number of batches, and
N workers see exactly the samples one worker sees at the same global batch.

The loader and the evaluation never touch a split's storage directly: they hand it batches of
row indices and read back raw samples (``split.stream``), so a split may also live on disk and
be any map-style Dataset read in DataLoader workers (:class:`trainer.data.datasets.DatasetSplit`)
with the same order, whose batches may have any structure (:func:`prepare_batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from trainer.data.batch import cast_floats


@dataclass
class TensorSplit:
    """One split of a data set: ``inputs[i]`` is sample i (any dtype), ``targets[i]`` its label;
    ``rows[i]``, where set, the index of sample i in the data as given (a split held out of
    another: trainer/data/validation.py), for messages that name a row."""

    inputs: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets):
            raise ValueError(
                f"{len(self.inputs)} inputs but {len(self.targets)} targets in one split"
            )

    def __len__(self) -> int:
        return len(self.inputs)

    def to(self, device: torch.device) -> TensorSplit:
        return TensorSplit(self.inputs.to(device), self.targets.to(device), self.rows)

    def stream(self, batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The raw ``(inputs, targets)`` of each batch of row indices (a tensor on the data's
        device) or slice; a slice is a view, an index tensor one gather."""
        for rows in batches:
            if isinstance(rows, slice):
                yield self.inputs[rows], self.targets[rows]
            else:
                yield self.inputs.index_select(0, rows), self.targets.index_select(0, rows)


class InMemoryData:
    """What a recipe's data class provides. Subclasses set the attributes in ``__init__``.

    Attributes:
        train, test: the training and the test split, raw (for example uint8 pixels).
        val: the validation split, where the data has one of its own (a ``valid/`` folder);
            None: the run holds out ``data.val_fraction`` of the training rows
            (trainer/data/validation.py), or has none (``data.val_fraction=0``).
        class_names: one name per class, for logs and sample-prediction images.
        description: one line saying what the data really is (printed at start).
        augmentation: applied to training batches after ``transform`` (never to eval
            batches): a callable ``(batch, generator, offset, global_batch) -> batch`` such as
            :class:`trainer.data.augment.RandomAffine`, or None.
    """

    train: TensorSplit
    test: TensorSplit
    val: TensorSplit | None = None
    class_names: list[str]
    description: str = ""
    augmentation: Callable | None = None

    def transform(self, inputs: torch.Tensor) -> torch.Tensor:
        """Turn a raw batch into model input (runs on the training device, per batch)."""
        return inputs.float()

    def as_images(self, inputs: torch.Tensor) -> torch.Tensor | None:
        """A raw batch as N x C x H x W floats in [0, 1] for TensorBoard, or None."""
        return None

    def model_kwargs(self) -> dict:
        """Model constructor arguments only the data knows (a vocabulary size), or none."""
        return {}

    def state_dict(self) -> dict:
        """What using a trained model needs from the data (a vocabulary); in checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore: a resumed run rebuilds its data from the config (the saved
        state is for commands that use the model without the data: trainer-predict...)."""

    def sample_texts(self, model: torch.nn.Module) -> list[str]:
        """A few texts the model generates, for TensorBoard's text tab (text recipes)."""
        return []

    def close(self) -> None:
        """The run is over: splits that keep reader processes (a Dataset's DataLoader
        workers) end them now rather than when the data is collected."""
        for split in (self.train, self.val, self.test):
            if callable(close := getattr(split, "close", None)):
                close()


def seeded_generator(*key: int) -> torch.Generator:
    """A generator whose stream is a function of ``key`` alone (any rank, any resume)."""
    state = np.random.SeedSequence(list(key)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch, a function of (seed, epoch) only."""
    return torch.randperm(num_samples, generator=seeded_generator(seed, epoch))


class InMemoryLoader:
    """Training batches of one rank: shuffled per epoch, last partial global batch dropped."""

    def __init__(
        self,
        split: TensorSplit,
        global_batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        prepare: Callable | None = None,
        augment: Callable | None = None,
    ) -> None:
        self.split = split
        self.augment = augment
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.prepare = prepare or (lambda batch: batch)
        self.resize(global_batch_size)

    def resize(self, global_batch_size: int) -> None:
        """Train at this global batch from the next batch on: an epoch in progress continues
        at its sample offset with the new size (schedule=increase_batch grows it at epoch
        starts, the adaptive batch size at its decision points)."""
        if global_batch_size % self.world_size:
            raise ValueError(
                f"global batch {global_batch_size} does not split over {self.world_size} workers"
            )
        if global_batch_size > len(self.split):
            raise ValueError(
                f"global batch {global_batch_size} is larger than the {len(self.split)} "
                "training samples"
            )
        self.global_batch_size = global_batch_size
        self.batch_size = global_batch_size // self.world_size

    def __len__(self) -> int:
        """Whole global batches in an epoch at the current size."""
        return len(self.split) // self.global_batch_size

    def epoch_done(self, offset: int) -> bool:
        """Whether an epoch ``offset`` samples in has no whole global batch left."""
        return len(self.split) - offset < self.global_batch_size

    def epochs_done(self, epoch: int, offset: int) -> float:
        """``epoch`` plus the share of it ``offset`` samples are (of the samples its whole
        batches cover at the current size; for a batch that never changed, batches done over
        batches per epoch, to the bit)."""
        return epoch + offset / (len(self) * self.global_batch_size)

    def left_out(self) -> str:
        """What an epoch leaves out, in words for the run's first lines ("" when nothing):
        the rows after the last whole global batch of each epoch's order."""
        rows = len(self.split) % self.global_batch_size
        if not rows:
            return ""
        return (f"{len(self.split):,} training rows at global batch {self.global_batch_size}: "
                f"the last {rows} of each epoch's order are left out (a new order each epoch, "
                "so no row always is); every step keeps the whole global batch, which is what "
                "makes any number of workers train as one")

    @property
    def first_row(self) -> int:
        """Where this rank's slice starts in each global batch (its rows follow in order)."""
        return self.rank * self.batch_size

    def shard_indices(self, epoch: int, offset: int = 0) -> torch.Tensor:
        """This rank's sample indices for the epoch from ``offset`` samples in, at the current
        global batch, in the order it will see them."""
        order = epoch_permutation(len(self.split), self.seed, epoch)
        steps = (len(self.split) - offset) // self.global_batch_size
        used = order[offset:offset + steps * self.global_batch_size]
        return used.view(steps, self.world_size, self.batch_size)[:, self.rank].reshape(-1)

    def sample_at(self, epoch: int, position: int) -> int:
        """The sample at ``position`` (samples into the epoch, over all ranks) of its order."""
        return int(epoch_permutation(len(self.split), self.seed, epoch)[position])

    def epoch(self, epoch: int, start: int = 0, *, offset: int | None = None) -> Iterator:
        """Yield the epoch's batches from batch ``start`` (or from ``offset`` samples in: a
        resumed run's position), prepared (:func:`prepare_batch`): ``(inputs, targets)``, or
        the structure a Dataset's items collate to.

        The position is a sample offset: each global batch takes the next B samples of the
        epoch's order, B the size when it is drawn, so a :meth:`resize` between two batches
        changes the batch inside the epoch with no sample skipped or repeated (the stream is
        reopened at the offset; a Dataset's prefetched batches are dropped)."""
        offset = start * self.global_batch_size if offset is None else offset
        while True:
            size = self.global_batch_size
            index = self.shard_indices(epoch, offset)
            if isinstance(self.split, TensorSplit):
                index = index.to(self.split.inputs.device)  # gathered where the tensors live
            # A gather per batch from the sliced index: no per-sample Python, and no
            # epoch-sized copy of the data set (which costs more than it saves on the CPU).
            # (An epoch resumed at its end has no batches left: split() of an empty index
            # would still give one empty batch, and the mean loss over it is NaN.)
            rows = list(index.split(self.batch_size)) if len(index) else []
            stream = self.split.stream(rows)
            for raw in stream:
                batch = self.prepare(raw)
                if self.augment is not None:  # (in-memory data: an (inputs, targets) pair)
                    # Drawn per (seed, epoch, batch) for the global batch: data/augment.py.
                    # (Batch k of an epoch at one size is keyed k, as before sizes changed.)
                    key = ((offset // size,) if offset % size == 0 else (offset, size))
                    x, y = batch
                    batch = (self.augment(x, seeded_generator(self.seed, epoch, *key, 0x6175),
                                          self.first_row, size), y)
                yield batch
                offset += size
                if self.global_batch_size != size:
                    break  # resized: the rest of the epoch at the new size
            else:
                return
            if callable(close := getattr(stream, "close", None)):
                close()


def eval_share(num_samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """The rows ``[lo, hi)`` of an eval split that ``rank`` evaluates (contiguous, every row
    on exactly one rank)."""
    bounds = np.linspace(0, num_samples, world_size + 1).round().astype(int)
    return int(bounds[rank]), int(bounds[rank + 1])


def eval_batches(
    split: TensorSplit,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    prepare: Callable | None = None,
) -> Iterator:
    """This rank's contiguous share of an eval split, in order, every sample exactly once;
    batches prepared like the loader's."""
    prepare = prepare or (lambda batch: batch)
    lo_rank, hi_rank = eval_share(len(split), rank, world_size)
    slices = [slice(lo, min(lo + batch_size, hi_rank))
              for lo in range(lo_rank, hi_rank, batch_size)]
    for raw in split.stream(slices):
        yield prepare(raw)


def prepare_batch(raw, transform: Callable[[torch.Tensor], torch.Tensor],
                  dtype: torch.dtype = torch.float32):
    """A raw batch as the task takes it. An ``(inputs, targets)`` pair of tensors (the
    in-memory data's, a Dataset's ``(input, target)`` items) gets the data's ``transform`` on
    its inputs (pixels to floats, in the run's dtype) and stays a tuple; any other structure
    (a dict, several inputs) is the Dataset's own, as it collated. Either way floating-point
    tensors come in the run's dtype (trainer.dtype) and integer ones (labels, word indices) as
    they are."""
    if type(raw) in (tuple, list) and len(raw) == 2 and isinstance(raw[0], torch.Tensor):
        x, y = raw
        if isinstance(y, torch.Tensor) and y.is_floating_point() and y.dtype != dtype:
            y = y.to(dtype)  # (compared first: even a .to() that changes nothing costs)
        return transform(x), y
    return cast_floats(raw, dtype)
