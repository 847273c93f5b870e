"""One optimizer step: forward, backward (in micro-batches when accumulating), the
backend's gradient averaging, gradient noise and the B_simple measurement, the update.

This is the hot path: it does no host synchronisation; the loss and the number of correct
predictions come back as device tensors for the loop to read in batches.
"""

from __future__ import annotations

import contextlib

import torch

from trainer.build import Run
from trainer.noise_scale import squared_norm


def train_step(run: Run, inputs: torch.Tensor, targets: torch.Tensor, step: int,
               micro_batches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over this worker's share of the global batch; (loss, correct)."""
    k = micro_batches
    model, task, precision, noise = run.train_model, run.task, run.precision, run.noise
    first_sq = None
    weights = noise.sample_weights(step, run.loader.global_batch_size, run.backend.rank,
                                   run.backend.world_size)
    run.optimizer.zero_grad()  # set_to_none (torch >= 2.0 default; Horovod takes no args)
    if k == 1:
        with precision.autocast():
            logits = model(inputs)
            loss = task.loss(logits, targets, weights)
        precision.backward(loss)
        loss, correct = loss.detach(), task.count_correct(logits, targets)
    else:
        # k equal micro-batches, each loss scaled by 1/k: the summed gradient is the
        # gradient of the whole batch's mean loss. Only the last backward communicates.
        loss, correct = 0.0, 0
        micro_weights = weights.chunk(k) if weights is not None else [None] * k
        micro = zip(inputs.chunk(k), targets.chunk(k), micro_weights, strict=True)
        for i, (x, y, w) in enumerate(micro):
            sync = contextlib.nullcontext() if i == k - 1 else run.backend.no_sync(model)
            with sync:
                with precision.autocast():
                    logits = model(x)
                    part = task.loss(logits, y, w) / k
                precision.backward(part)
            if i == 0 and run.noise_scale is not None:
                # The first micro-batch's own gradient (its loss carried a 1/k).
                first_sq = squared_norm(run.model.parameters()) * (k * k)
            loss = loss + part.detach()
            correct = correct + task.count_correct(logits, y)
    with run.backend.step_context(run.optimizer):  # gradients are averaged from here on
        if run.noise_scale is not None:
            _record_noise_scale(run, first_sq, k)
        if noise.active:
            precision.unscale(run.optimizer)
            noise.perturb(run.model.parameters(), step)
        precision.step(run.optimizer)
    return loss, correct


def _record_noise_scale(run: Run, first_sq: torch.Tensor | None, micro_batches: int) -> None:
    """This step's small- and large-batch squared gradient norms, for B_simple."""
    scale_sq = run.precision.loss_scale() ** 2  # fp16 gradients still carry the loss scale
    if first_sq is None:  # measured by the backend around its all-reduce
        small, big = run.backend.take_gradient_norms()
        b_small = run.loader.batch_size
    else:
        small, big = first_sq, squared_norm(run.model.parameters())
        b_small = run.loader.batch_size // micro_batches
    run.noise_scale.record(small / scale_sq, big / scale_sq, b_small,
                           run.loader.global_batch_size)
