"""Evaluation over a split (validation during training, test once at the end): the task's
metrics, summed over every worker's share."""

from __future__ import annotations

from collections.abc import Callable

import torch

from trainer.data.batch import rows
from trainer.data.memory import eval_batches, eval_share
from trainer.engine.build import Run
from trainer.engine.first_batch import explain_evaluation_failure
from trainer.parallel.backends import Backend
from trainer.tasks import batch_counts, sum_width, task_metrics


def evaluate(run: Run, split: str = "val") -> dict[str, float]:
    """Task metrics over the whole ``split`` (``val`` during training, ``test`` once at the
    end), summed over workers, as ``<split>/<name>``."""
    # Held-out validation rows are rows of the training data as given (for error lines).
    whose = ("training" if split == "val" and getattr(run.data, "held_out", False)
             else _NAMES.get(split, split))
    metrics = evaluate_split(run.train_model, run.task, run.feed, getattr(run.data, split),
                             run.cfg.data.eval_batch_size, run.backend, run.loader.prepare,
                             name=_NAMES.get(split, split), whose=whose)
    return {f"{split}/{name}": value for name, value in metrics.items()}


_NAMES = {"val": "validation"}


@torch.no_grad()
def evaluate_split(model: torch.nn.Module, task, feed: Callable, split, batch_size: int,
                   backend: Backend, prepare: Callable, *, name: str = "evaluated",
                   whose: str | None = None) -> dict[str, float]:
    """The task's metrics over ``split``, each rank taking its contiguous share, the sums
    reduced over every rank (the same numbers on any number of workers). ``name``: the
    split in words and ``whose``: the data set its rows index, for the line that names a bad
    sample (a Dataset's label outside the model's classes, first read here)."""
    was_training = model.training
    model.eval()
    # [loss_sum, correct, count, *the task's extra sums]; the width is the task's, so a rank
    # whose share of the split is empty still joins the all-reduce with the right shape.
    sums = torch.zeros(sum_width(task), dtype=torch.float64, device=backend.device)
    batches = eval_batches(split, batch_size, rank=backend.rank,
                           world_size=backend.world_size, prepare=prepare)
    first = eval_share(len(split), backend.rank, backend.world_size)[0]
    for batch in batches:
        n = rows(batch)
        try:
            outputs, targets = feed(model, batch)
            loss = task.loss(outputs, targets).double()
            counts = batch_counts(task, outputs, targets).double()
        except Exception:
            line = explain_evaluation_failure(task, model, feed, batch, split, first,
                                              name, whose or name)
            if line is None:
                raise
            raise line from None
        first += n
        sums[0] += loss * n
        sums[1] += counts[0]
        sums[2] += n
        sums[3:] += counts[1:]
    model.train(was_training)
    return task_metrics(task, backend.all_reduce_sum(sums).tolist())
