"""Comparing runs: weights from a run directory, and the float64 equivalence settings."""

from __future__ import annotations

from pathlib import Path

import torch

# Equivalence is checked in float64: in float32, batch B on one worker and B/2 on two reach
# different matmul blockings, whose sums round differently (and differently again on AMD and
# Intel CPUs); 50 steps amplify that to ~1e-4. In float64 the same runs agree to ~1e-16, so
# any difference above EXACT is a real bug, on any CPU.
FLOAT64 = "trainer.dtype=float64"
EXACT = 1e-9
# The digits MLP with dropout (per-sample masks, the default), 50 steps at global batch 96
# (about 3.5 epochs), float64.
EQUIVALENCE = ("data.batch_size=96", "trainer.max_steps=50", "logger.sample_predictions=0",
               "model.dropout=0.2", FLOAT64)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The last checkpoint's model weights, read as the trainer reads it (a callback's state
    may hold numpy values and the like: trainer/io/state_types.py)."""
    from trainer.io.checkpoint_read import read_checkpoint

    return read_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)
