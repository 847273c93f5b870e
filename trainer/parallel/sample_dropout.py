"""Dropout whose masks belong to the sample, not to the worker (``trainer.dropout_masks``).

nn.Dropout draws its mask from the process's RNG, so in a data-parallel run a sample's mask
depends on which worker holds it and on what that worker drew before: N workers can never
reproduce one worker with dropout on. Here the mask of sample i in optimizer step t comes from
a counter-based hash of (trainer.seed, t, layer, i, element), with i the sample's index in the
GLOBAL batch: every sample gets the same mask whichever worker, micro-batch or world size it is
trained in, and a resumed run draws the same masks again (the key holds no RNG state). Masks of
different samples, layers and steps are independent draws of the same Bernoulli(1 - p).

The hash is a 31-bit integer mixer (xorshift-multiply rounds, constants below 2^31, so every
product fits in int64 and no step relies on overflow): bit-identical on any CPU or GPU. It
costs about what nn.Dropout's own mask draw costs (bench/dropout.py).

``apply_sample_dropout(model, seed, position)`` swaps every nn.Dropout / Dropout1d/2d/3d of any
model in place; the training step tells ``position`` where its rows sit in the global batch
before each forward. The batch is the first dimension, or the second (sequence-first
tensors); a layer that sees neither, and dropout that is not a module (``F.dropout`` inside a
forward, nn.LSTM's ``dropout=``, attention's ``dropout_p``), still draws from the worker's RNG.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

_M31 = (1 << 31) - 1
_C1, _C2 = 0x5BD1E995 & _M31, 0x2C1B3C6D  # odd: multiplication mod 2^31 is a bijection


def mix31(x: torch.Tensor) -> torch.Tensor:
    """A bijective mix of int64 values in [0, 2^31), in place when ``x`` is a temporary."""
    x.bitwise_xor_(x >> 16).mul_(_C1).bitwise_and_(_M31)
    x.bitwise_xor_(x >> 15).mul_(_C2).bitwise_and_(_M31)
    return x.bitwise_xor_(x >> 16)


def _key(*parts: int) -> int:
    """A 31-bit key from any integers (host side, once per layer and forward)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _M31


@dataclass
class BatchPosition:
    """Where the rows of the current training forward sit: optimizer step, first global index,
    row count. ``step`` is None outside a training step (the layers then act as nn.Dropout)."""

    step: int | None = None
    first: int = 0
    rows: int = 0

    def set(self, step: int, first: int, rows: int) -> None:
        self.step, self.first, self.rows = step, first, rows

    def clear(self) -> None:
        self.step = None


class SampleDropout(nn.Module):
    """nn.Dropout (``channels=False``) or Dropout1d/2d/3d (``channels=True``: one draw per
    sample and channel) with masks keyed by (seed, step, layer, global sample index)."""

    def __init__(self, p: float, seed: int, layer: int, position: BatchPosition,
                 channels: bool = False, name: str = "") -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.seed, self.layer, self.channels = p, seed, layer, channels
        self.position, self.name = position, name
        self._warned = False
        self._element_keys: dict[tuple[int, torch.device], torch.Tensor] = {}

    def extra_repr(self) -> str:
        return f"p={self.p}, per-sample masks, layer={self.layer}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        where = self.position
        if where.step is None:  # a training-mode forward outside the training step
            return nn.functional.dropout(x, self.p, True)
        # The batch is dimension 0, or 1 for sequence-first tensors (nn.Transformer's default
        # layout); anything else gets the worker's own masks, with a warning once.
        dim = 0 if x.shape[0] == where.rows else 1 if (
            x.dim() > 1 and x.shape[1] == where.rows and not self.channels) else None
        if dim is None:
            if not self._warned:
                self._warned = True
                log.warning(
                    "trainer.dropout_masks=per_sample: dropout layer '%s' got a tensor of "
                    "shape %s with no batch dimension of %d first; it draws per-worker masks",
                    self.name, tuple(x.shape), where.rows)
            return nn.functional.dropout(x, self.p, True)
        rows_first = x.movedim(dim, 0)
        keep = self.keep_mask(where.step, where.first, rows_first.shape, x.device)
        if self.channels:
            keep = keep.view(*x.shape[:2], *([1] * (x.dim() - 2)))
        else:
            keep = keep.view(rows_first.shape).movedim(0, dim)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p)) if self.p < 1 else x * 0

    def keep_mask(self, step: int, first: int, shape: torch.Size,
                  device: torch.device) -> torch.Tensor:
        """Bool mask (rows x elements per row): True where the element is kept."""
        rows = shape[0]
        elements = shape[1] if self.channels else int(torch.Size(shape[1:]).numel())
        stream = _key(self.seed, step, self.layer)
        samples = torch.arange(first, first + rows, dtype=torch.int64, device=device)
        samples = mix31(mix31(samples.bitwise_and_(_M31).bitwise_xor_(stream)).bitwise_xor_(
            _key(stream, 1)))
        bits = mix31(samples[:, None] ^ self._elements(elements, device)[None, :])
        return bits >= round(self.p * (1 << 31))

    def _elements(self, count: int, device: torch.device) -> torch.Tensor:
        cached = self._element_keys.get((count, device))
        if cached is None:
            cached = mix31(torch.arange(count, dtype=torch.int64, device=device) ^ 0x3C6EF372)
            self._element_keys = {(count, device): cached}  # one shape per layer, normally
        return cached


_SWAPPED = {nn.Dropout: False, nn.Dropout1d: True, nn.Dropout2d: True, nn.Dropout3d: True}


def apply_sample_dropout(model: nn.Module, seed: int, position: BatchPosition) -> list[str]:
    """Swap every nn.Dropout/Dropout1d/2d/3d in ``model`` (in place) for a SampleDropout.

    Returns the names of modules whose own dropout cannot be swapped (nn.RNN/LSTM/GRU with
    ``dropout`` > 0, nn.MultiheadAttention with ``dropout`` > 0): they keep per-worker masks.
    """
    layer = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in _SWAPPED:
                full = next(n for n, m in model.named_modules() if m is child)
                setattr(parent, name, SampleDropout(
                    child.p, seed, layer, position, channels=_SWAPPED[type(child)], name=full,
                ))
                layer += 1
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.RNNBase | nn.MultiheadAttention) and m.dropout > 0]
