"""Evaluation over the test split, and the sample predictions drawn for TensorBoard."""

from __future__ import annotations

import torch

from trainer.build import Run
from trainer.data.memory import eval_batches


@torch.no_grad()
def evaluate(run: Run) -> dict[str, float]:
    """Task metrics over the whole test split, summed over workers."""
    model, task, data = run.train_model, run.task, run.data
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=run.device)
    batches = eval_batches(
        data.test, run.cfg.data.eval_batch_size, rank=run.backend.rank,
        world_size=run.backend.world_size, transform=data.transform,
    )
    for inputs, targets in batches:
        logits = model(inputs)
        n = len(targets)
        sums[0] += task.loss(logits, targets).double() * n
        sums[1] += task.count_correct(logits, targets)
        sums[2] += n
    model.train(was_training)
    metrics = task.metrics(*run.backend.all_reduce_sum(sums).tolist())
    return {f"eval/{name}": value for name, value in metrics.items()}


@torch.no_grad()
def log_sample_predictions(run: Run) -> None:
    count = min(run.cfg.logger.sample_predictions, len(run.data.test))
    if count == 0:
        return
    if run.logger.enabled:
        was_training = run.model.training
        run.model.eval()
        texts = run.data.sample_texts(run.model)
        run.model.train(was_training)
        if texts:
            run.logger.texts("eval/samples", texts, run.progress.step)
    raw, targets = next(run.data.test.stream([slice(0, count)]))
    images = run.data.as_images(raw)
    if images is None:
        return
    was_training = run.model.training
    run.model.eval()
    predicted = run.task.predict(run.model(run.data.transform(raw))).tolist()
    run.model.train(was_training)
    names = run.data.class_names

    def name(index: int) -> str:
        return names[index] if 0 <= index < len(names) else str(index)

    run.logger.predictions(images, [name(p) for p in predicted],
                           [name(a) for a in targets.tolist()], run.progress.step)
