"""Evaluation over the test split: the task's metrics, summed over every worker's share."""

from __future__ import annotations

import torch

from trainer.data.batch import rows
from trainer.data.memory import eval_batches
from trainer.engine.build import Run
from trainer.tasks import batch_counts, sum_width, task_metrics


@torch.no_grad()
def evaluate(run: Run) -> dict[str, float]:
    """Task metrics over the whole test split, summed over workers."""
    model, task, data = run.train_model, run.task, run.data
    was_training = model.training
    model.eval()
    # [loss_sum, correct, count, *the task's extra sums]; the width is the task's, so a rank
    # whose share of the split is empty still joins the all-reduce with the right shape.
    sums = torch.zeros(sum_width(task), dtype=torch.float64, device=run.device)
    batches = eval_batches(
        data.test, run.cfg.data.eval_batch_size, rank=run.backend.rank,
        world_size=run.backend.world_size, prepare=run.loader.prepare,
    )
    for batch in batches:
        outputs, targets = run.feed(model, batch)
        n = rows(batch)
        sums[0] += task.loss(outputs, targets).double() * n
        counts = batch_counts(task, outputs, targets).double()
        sums[1] += counts[0]
        sums[2] += n
        sums[3:] += counts[1:]
    model.train(was_training)
    metrics = task_metrics(task, run.backend.all_reduce_sum(sums).tolist())
    return {f"eval/{name}": value for name, value in metrics.items()}
