"""The task's counts over training batches (correct predictions, a task's extra sums), counted
many batches at a time.

Why: after a backward pass every small kernel is slow (the caches hold the backward's data,
not the kernel's): counting one batch (argmax, compare, sum) cost 50 us a step on the MNIST
MLP on 2 CPU threads, 2% of the step, and even copying the outputs aside cost 28 us
(bench/overhead.py, docs/performance.md). So a step adds no kernel at all: it keeps its own
outputs and targets (references, no copy: backward has already released every activation the
outputs' graph saved, so what stays alive is the outputs themselves and a few graph nodes),
and the task counts them in one call over the joined batches when the loop reads its pending
losses back (log lines, checkpoints, epoch ends). A task's counts are sums over samples, so the
total is the same. Outputs larger than :data:`KEEP_ELEMENTS` (a language model's
B x T x vocab) are counted at once, as before, so holding them never costs memory worth
mentioning.
"""

from __future__ import annotations

from typing import Any

import torch

from trainer.data.batch import cat, elements, joinable
from trainer.tasks import batch_counts

# Per step: 64k elements (256 KB of float32); a log window of 50 steps then holds 12.5 MB.
KEEP_ELEMENTS = 1 << 16


class Tally:
    """Collects ``(outputs, targets)`` of training batches (tensors, or any structure a task's
    forward returns); :meth:`take` returns their summed counts ``[correct, *extra_sums]`` in
    float64, on the outputs' device."""

    def __init__(self, task) -> None:
        self.task = task
        self._kept: list[tuple[Any, Any]] = []
        self._counted: list[torch.Tensor] = []

    def add(self, outputs: Any, targets: Any) -> None:
        size = outputs.numel() if isinstance(outputs, torch.Tensor) else elements(outputs)
        if size <= KEEP_ELEMENTS:
            self._kept.append((outputs, targets))
        else:
            self._counted.append(_count(self.task, outputs, targets))

    def take(self) -> torch.Tensor | None:
        """The summed counts since the last call (None if nothing was added)."""
        kept, self._kept = self._kept, []
        with torch.no_grad():
            if kept:
                try:  # one call over every batch kept: the usual case, one shape
                    self._counted.append(_count(self.task, cat([o for o, _ in kept]),
                                                cat([t for _, t in kept])))
                except (RuntimeError, LookupError, TypeError):  # shapes that do not join
                    self._count_runs(kept)
            if not self._counted:
                return None
            counted, self._counted = self._counted, []
            return counted[0] if len(counted) == 1 else torch.stack(counted).sum(0)

    def _count_runs(self, kept: list[tuple[Any, Any]]) -> None:
        """Count consecutive batches of one shape together (the last batch of a sequence
        task, or outputs that change width)."""
        start = 0
        for end in range(1, len(kept) + 1):
            if end == len(kept) or not _joinable(kept[end - 1], kept[end]):
                run = kept[start:end]
                outputs = run[0][0] if len(run) == 1 else cat([o for o, _ in run])
                targets = run[0][1] if len(run) == 1 else cat([t for _, t in run])
                self._counted.append(_count(self.task, outputs, targets))
                start = end


def _joinable(a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
    return joinable(a[0], b[0]) and joinable(a[1], b[1])


def _count(task, outputs: Any, targets: Any) -> torch.Tensor:
    with torch.no_grad():
        return batch_counts(task, outputs, targets).double()
