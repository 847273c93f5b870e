"""Reader for LeCun's IDX format (MNIST and friends), gzipped or raw.

Layout: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension, then the data.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from trainer.errors import UserError

_UBYTE = 0x08


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file of unsigned bytes into a uint8 tensor of its stored shape."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(f"cannot read {path}: {exc}; replace it with a good copy") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE or not 1 <= raw[3] <= 4:
        raise UserError(
            f"{path} is not an IDX file of unsigned bytes (bad magic number "
            f"{raw[:4].hex() or 'empty'}); replace it with the original LeCun file"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path} is truncated inside its header; replace it with a good copy")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise UserError(
            f"{path} holds {len(raw) - header} data bytes but its header {shape} says "
            f"{expected}; the file is truncated or not the one named, replace it"
        )
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file (gzipped when the name ends in .gz)."""
    array = tensor.to(torch.uint8).numpy()
    header = bytes([0, 0, _UBYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.tobytes()
    path.write_bytes(gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload)
