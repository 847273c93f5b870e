"""One optimizer step: forward, backward (in micro-batches when accumulating), the backend's
gradient averaging, the B_simple measurement, gradient clipping, gradient noise, the update.

This is the hot path: it does no host synchronisation; the loss comes back as a device tensor
for the loop to read in batches, and the outputs go to the loop's tally (counted later, many
steps at once: trainer/engine/tally.py).
"""

from __future__ import annotations

import contextlib

import torch

from trainer.engine.build import Run
from trainer.engine.tally import Tally
from trainer.large_batch.noise_scale import squared_norm


def train_step(run: Run, inputs: torch.Tensor, targets: torch.Tensor, step: int,
               micro_batches: int, tally: Tally) -> torch.Tensor:
    """One optimizer step over this worker's share of the global batch; its loss, still on
    the device (not detached: the loop reads it under no_grad). The outputs and targets go to
    ``tally``."""
    k = micro_batches
    model, task, precision, noise = run.train_model, run.task, run.precision, run.noise
    weights = noise.sample_weights(step, run.loader.global_batch_size, run.backend.rank,
                                   run.backend.world_size)
    # This worker's rows start here in the global batch (per-sample dropout masks use it).
    first = run.loader.first_row
    run.optimizer.zero_grad()  # set_to_none (torch >= 2.0 default; Horovod takes no args)
    if k == 1:
        run.batch_position.set(step, first, len(inputs))
        with precision.autocast():
            logits = model(inputs)
            loss = task.loss(logits, targets, weights)
        precision.backward(loss)
        if run.micro_norms is not None:
            run.micro_norms.end_backward()
        tally.add(logits, targets)  # kept as they are: no kernel here (see tally.py)
    else:
        # k equal micro-batches, each loss scaled by 1/k: the summed gradient is the
        # gradient of the whole batch's mean loss. Only the last backward communicates.
        loss = 0.0
        micro_weights = weights.chunk(k) if weights is not None else [None] * k
        micro = zip(inputs.chunk(k), targets.chunk(k), micro_weights, strict=True)
        for i, (x, y, w) in enumerate(micro):
            sync = contextlib.nullcontext() if i == k - 1 else run.backend.no_sync(model)
            run.batch_position.set(step, first + i * len(x), len(x))
            with sync:
                with precision.autocast():
                    logits = model(x)
                    part = task.loss(logits, y, w) / k
                precision.backward(part)
            if run.micro_norms is not None:
                run.micro_norms.end_backward()
            loss = loss + part.detach()
            tally.add(logits, y)
    run.batch_position.clear()
    with run.backend.step_context(run.optimizer):  # gradients are averaged from here on
        if run.noise_scale is not None:
            _record_noise_scale(run, k)
        if run.clip is not None:
            precision.unscale(run.optimizer)
            run.clip(run.model.parameters())
        if noise.active:
            precision.unscale(run.optimizer)
            noise.perturb(run.model.parameters(), step)
        precision.step(run.optimizer)
    return loss


def _record_noise_scale(run: Run, micro_batches: int) -> None:
    """This step's small- and large-batch squared gradient norms, for B_simple.

    Small: the mean over this worker's micro-batches of each one's own gradient (its loss
    carried a 1/k, hence the k^2); the loop averages it over workers. Large: the averaged
    gradient of the whole global batch.
    """
    k = micro_batches
    scale_sq = run.precision.loss_scale() ** 2  # fp16 gradients still carry the loss scale
    small = torch.stack(run.micro_norms.take()).mean() * (k * k)
    big = squared_norm(run.model.parameters())
    run.noise_scale.record(small / scale_sq, big / scale_sq, run.loader.batch_size // k,
                           run.loader.global_batch_size)
