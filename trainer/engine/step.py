"""One optimizer step: forward and backward in micro-batches, the backend's gradient averaging,
the gradient hooks, the update.

What is done to the gradient between the backward and the update (B_simple's measurement,
clipping, gradient noise, a user's own rule) is not named here: each is a callback's
``on_after_backward`` (the averaged gradient, as the backward left it) or
``on_before_optimizer_step`` (the averaged gradient at its true size, a loss scaler's unscale
done), run inside the backend's step context, where the gradient is final.

This is the hot path: it does no host synchronisation; the loss comes back as a device tensor
for the loop to read in batches, and the outputs go to the loop's tally (counted later, many
steps at once: trainer/engine/tally.py).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from trainer.data.batch import rows, split
from trainer.engine.build import Run
from trainer.engine.tally import Tally

_SYNC = contextlib.nullcontext()  # the last micro-batch's backward communicates


def train_step(run: Run, batch: Any, step: int, micro_batches: int,
               tally: Tally) -> torch.Tensor:
    """One optimizer step over this worker's share of the global batch (any structure: the
    task feeds it to the model, trainer/tasks.py); its loss, still on the device. The outputs
    and targets go to ``tally``.

    With k micro-batches each loss is scaled by 1/k, so the summed gradient is the gradient of
    the whole batch's mean loss; only the last backward communicates.
    """
    k = micro_batches
    model, task, feed = run.train_model, run.task, run.feed
    precision, backend = run.precision, run.backend
    # Per-sample loss weights (noise=small_batch), or None: the noise's, for the global batch.
    weights = run.noise.sample_weights(step, run.loader.global_batch_size, backend.rank,
                                       backend.world_size)
    parts = split(batch, k)
    part_weights = (None,) * k if weights is None else split(weights, k)
    # This worker's rows start here in the global batch (per-sample dropout masks use it).
    first = run.loader.first_row
    position = run.batch_position
    run.optimizer.zero_grad()  # set_to_none (torch >= 2.0 default; Horovod takes no args)
    loss = None
    for i, (part, w) in enumerate(zip(parts, part_weights, strict=True)):
        n = rows(part)
        position.set(step, first, n)
        first += n
        with _SYNC if i == k - 1 else backend.no_sync(model):
            with precision.autocast():
                outputs, targets = feed(model, part)
                part_loss = task.loss(outputs, targets, w)
                if k > 1:
                    part_loss = part_loss / k
            precision.backward(part_loss)
        loss = part_loss.detach() if loss is None else loss + part_loss.detach()
        tally.add(outputs, targets)  # kept as they are: no kernel here (see tally.py)
    position.clear()
    callbacks = run.callbacks
    with backend.step_context(run.optimizer):  # gradients are averaged from here on
        callbacks.on_after_backward(run)
        precision.unscale(run.optimizer)
        callbacks.on_before_optimizer_step(run, run.optimizer)
        precision.step(run.optimizer)
    return loss
