"""Files on disk as a data set: each sample is decoded from its file when a batch needs it.

A :class:`FileDataset` is an ordinary map-style ``Dataset`` of ``(sample, target)`` pairs; put
in a :class:`trainer.data.datasets.DatasetSplit` it is sharded and ordered by the same loader
as in-memory data (so N workers still see what one worker sees, and a resumed run jumps to
batch k), while DataLoader worker processes open and decode the files. Decoded samples are raw
(uint8 images, say); the data class's ``transform`` turns them into model input on the
training device, as for in-memory data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset


class FileDataset(Dataset):
    """``decode(files[i])`` is sample i (a tensor), ``targets[i]`` its label.

    Args:
        files: one path per sample.
        targets: one label per sample (known without decoding: a folder name, a CSV column).
        decode: path -> raw sample tensor; a picklable callable (it runs in worker processes).
    """

    def __init__(self, files: Sequence[Path], targets: torch.Tensor,
                 decode: Callable[[Path], torch.Tensor]) -> None:
        if len(files) != len(targets):
            raise ValueError(f"{len(files)} files but {len(targets)} targets in one split")
        self.files, self.targets, self.decode = list(files), targets, decode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(self.files[index]), self.targets[index]
