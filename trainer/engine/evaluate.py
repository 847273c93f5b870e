"""Evaluation over a split (validation during training, test once at the end): the task's
metrics, summed over every worker's share."""

from __future__ import annotations

from collections.abc import Callable

import torch

from trainer.data.batch import rows
from trainer.data.memory import eval_batches
from trainer.engine.build import Run
from trainer.parallel.backends import Backend
from trainer.tasks import batch_counts, sum_width, task_metrics


def evaluate(run: Run, split: str = "val") -> dict[str, float]:
    """Task metrics over the whole ``split`` (``val`` during training, ``test`` once at the
    end), summed over workers, as ``<split>/<name>``."""
    metrics = evaluate_split(run.train_model, run.task, run.feed, getattr(run.data, split),
                             run.cfg.data.eval_batch_size, run.backend, run.loader.prepare)
    return {f"{split}/{name}": value for name, value in metrics.items()}


@torch.no_grad()
def evaluate_split(model: torch.nn.Module, task, feed: Callable, split, batch_size: int,
                   backend: Backend, prepare: Callable) -> dict[str, float]:
    """The task's metrics over ``split``, each rank taking its contiguous share, the sums
    reduced over every rank (the same numbers on any number of workers)."""
    was_training = model.training
    model.eval()
    # [loss_sum, correct, count, *the task's extra sums]; the width is the task's, so a rank
    # whose share of the split is empty still joins the all-reduce with the right shape.
    sums = torch.zeros(sum_width(task), dtype=torch.float64, device=backend.device)
    batches = eval_batches(split, batch_size, rank=backend.rank,
                           world_size=backend.world_size, prepare=prepare)
    for batch in batches:
        outputs, targets = feed(model, batch)
        n = rows(batch)
        sums[0] += task.loss(outputs, targets).double() * n
        counts = batch_counts(task, outputs, targets).double()
        sums[1] += counts[0]
        sums[2] += n
        sums[3:] += counts[1:]
    model.train(was_training)
    return task_metrics(task, backend.all_reduce_sum(sums).tolist())
