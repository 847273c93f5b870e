"""The file-backed data path: samples stay on disk and are decoded in DataLoader workers.

A :class:`FileSplit` is used exactly like a :class:`~trainer.data.memory.TensorSplit`: the
same loader shards and orders it (so N workers still see what one worker sees, and a resumed
run jumps to batch k), and the same evaluation walks it. Only the fetch differs: the loader
hands over each batch's row indices and the split streams the decoded batches back through a
``torch.utils.data.DataLoader`` whose worker processes open and decode the files while the
model trains on the previous batch. Decoded samples are raw (uint8 images, say); the data
class's ``transform`` turns them into model input on the training device, as for in-memory data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset


class FileSplit(Dataset):
    """One split as files: ``decode(files[i])`` is sample i (a tensor), ``targets[i]`` its label.

    Args:
        files: one path per sample.
        targets: one label per sample.
        decode: path -> raw sample tensor; a picklable callable (it runs in worker processes).
        workers: DataLoader worker processes (0: decode in the training process).
    """

    def __init__(self, files: Sequence[Path], targets: torch.Tensor,
                 decode: Callable[[Path], torch.Tensor], workers: int = 0,
                 device: torch.device | None = None) -> None:
        if len(files) != len(targets):
            raise ValueError(f"{len(files)} files but {len(targets)} targets in one split")
        if workers < 0:
            raise ValueError(f"workers={workers} must be >= 0")
        self.files, self.targets, self.decode = list(files), targets, decode
        self.workers = workers
        self.device = device or torch.device("cpu")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.decode(self.files[index])

    def to(self, device: torch.device) -> FileSplit:
        """Batches are decoded on the host and arrive on ``device``; labels live there."""
        return FileSplit(self.files, self.targets.to(device), self.decode, self.workers, device)

    def stream(self, batches: Sequence[torch.Tensor | slice]) -> Iterator[torch.Tensor]:
        """The decoded samples of each batch of row indices (or slice), in order."""
        rows = [list(range(len(self))[b]) if isinstance(b, slice) else b.tolist() for b in batches]
        if not rows:
            return
        pin = self.device.type == "cuda"
        # Its own generator: a DataLoader otherwise draws its workers' base seed from the
        # global RNG, and a resumed run (which opens the epoch's loader after restoring the
        # RNG) would then draw different dropout masks from the original run.
        loader = DataLoader(self, batch_sampler=rows, num_workers=min(self.workers, len(rows)),
                            pin_memory=pin, generator=torch.Generator().manual_seed(0))
        for batch in loader:
            yield batch.to(self.device, non_blocking=pin)
