"""What a model's output means: the loss to train on and the sums behind each metric.

Metrics are kept as sums, never as per-batch means, so they can be summed over batches and
over workers and divided once (a mean of means is wrong for unequal shards). Every task has
three: the summed loss, the number of correct predictions and the number of samples. A task
may add its own, named in ``extra_sums`` and returned by ``counts`` after the correct count
(true positives for an F1, top-5 hits): the framework sums them over batches and workers like
the others and hands them to ``metrics`` by name, whose every entry is logged to TensorBoard
(``train/epoch_<name>``, ``val/<name>``, ``test/<name>``) and to metrics.json (``val_<name>``,
``test_<name>``, ``best_test_<name>``).

A batch is whatever the data yields, collated: ``(inputs, targets)``, ``(x1, x2, targets)``,
a dict of named tensors, nested (trainer/data/batch.py). The task decides how it feeds the model
and the loss; the framework keeps accumulation, averaging, clipping, precision and checkpoints,
and cuts, moves and casts the batch over its whole structure.

The protocol (a task need not subclass anything):

- ``forward(model, batch)``: ``(outputs, targets)`` of one (micro-)batch, each any structure.
  Optional; the default (:class:`Task`'s, and any task without one) calls the model on the
  batch's inputs (a tuple as positional arguments, a dict as keyword arguments) and takes the
  targets as :func:`trainer.data.batch.inputs_and_targets` finds them (a dict's
  ``target_key``). A task's own ``forward`` with its ``loss`` owns the whole forward-and-loss
  of a micro-batch (Lightning's ``training_step``): several inputs, several outputs, a loss
  from two of them.
- ``loss(outputs, targets, weights=None)``: the scalar to train on (weights: per-sample).
- ``predict(outputs)``: predicted labels (sample images, trainer-predict, the int8 report).
- ``counts(outputs, targets)``: 1-D tensor ``[correct, *extra_sums]`` for one batch, on the
  batch's device (no host sync); default ``count_correct`` alone.
- ``metrics(loss_sum, correct, count, **extra)``: the metric values from the summed counts.
- ``check(outputs, targets)``: optional; what is wrong with one micro-batch's outputs and
  targets as a :class:`BatchProblem` (one line naming it and the fix), else None. The loop
  asks it once, on the first micro-batch a process trains on (trainer/engine/first_batch.py),
  so that a model or data that cannot fit the task is one line, not a traceback from the
  loss; the built-in tasks check the output's type, rows, dtype and graph, and the labels'
  dtype, shape and range.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from trainer.data.batch import call_model, describe, inputs_and_targets
from trainer.errors import UserError


def default_forward(model: torch.nn.Module, batch: Any, target_key: str = "label",
                    name: str = "the task") -> tuple[Any, Any]:
    """The model's outputs on the batch's inputs, and the batch's targets (see
    :func:`trainer.data.batch.inputs_and_targets`)."""
    if type(batch) is tuple and len(batch) == 2:  # (inputs, targets), as the in-memory data
        inputs, targets = batch
    else:
        inputs, targets = inputs_and_targets(batch, target_key)
        if targets is None:
            raise UserError(
                f"{name} needs targets, and the batch {describe(batch)} has none; give the "
                "Dataset's items as (input, target) or dicts with a 'label' key (or set "
                "task.target_key), or give the task its own forward(model, batch)"
            )
    return call_model(model, inputs), targets


def forward_of(task: Any) -> Callable[[torch.nn.Module, Any], tuple[Any, Any]]:
    """How a batch feeds the model for ``task``: its own ``forward``, else the default."""
    own = getattr(task, "forward", None)
    if callable(own):
        return own
    target_key = getattr(task, "target_key", "label")
    return lambda model, batch: default_forward(model, batch, target_key, type(task).__name__)


@dataclass
class BatchProblem:
    """What a task's ``check`` found: one line naming the problem and the fix, and the row of
    the micro-batch it is in (None: not one row's), which the loop turns into the sample's
    index in the data set."""

    text: str
    row: int | None = None


def check_output(outputs: Any, targets: Any, what: str) -> BatchProblem | None:
    """What every built-in task needs of the model's output: one floating-point tensor in the
    autograd graph with one row per target. ``what``: the output the task expects, in words."""
    if not isinstance(outputs, torch.Tensor):
        return BatchProblem(
            f"the model returned a {describe(outputs)}, not a tensor of {what}; return that "
            "tensor alone from forward, or give the task a forward(model, batch) that picks it "
            "(docs/extending.md, Tasks)")
    if outputs.dim() == 0:
        return BatchProblem(f"the model returned a single number, not {what} (one row per "
                            "sample); return the output before any reduction (.mean(), .sum())")
    if not outputs.is_floating_point():
        return BatchProblem(
            f"the model's output is {str(outputs.dtype).removeprefix('torch.')}, not floating "
            f"point: return {what} as computed, not their argmax or a cast to integers")
    if not outputs.requires_grad:
        return BatchProblem(
            "the model's output is not in the autograd graph (detached in forward: .detach(), "
            ".item(), .numpy(), torch.no_grad(), or no parameter that trains), so nothing can "
            "learn from the loss; return the layers' output as computed")
    if isinstance(targets, torch.Tensor) and targets.dim() and len(outputs) != len(targets):
        return BatchProblem(
            f"the model returned {len(outputs)} rows for a micro-batch of {len(targets)} "
            "samples; it must return one row per sample (check the reshapes and flatten() in "
            "forward: flatten(1) keeps the batch dimension)")
    return None


class Task:
    """What the built-in tasks share: the default ``forward``, with the key of a dict batch's
    targets as an option (``task.target_key``)."""

    # Names of the sums ``counts`` returns after the correct count (none here).
    extra_sums: tuple[str, ...] = ()
    target_key: str = "label"

    def __init__(self, target_key: str = "label") -> None:
        self.target_key = target_key

    def forward(self, model: torch.nn.Module, batch: Any) -> tuple[Any, Any]:
        """``(outputs, targets)`` of one batch; override for multi-input/-output models."""
        return default_forward(model, batch, self.target_key, type(self).__name__)


class Classification(Task):
    """Cross-entropy over class logits; accuracy is the share of argmax hits."""

    def counts(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``[correct, *extra_sums]`` of one batch."""
        return self.count_correct(logits, targets).reshape(1)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy; with ``weights``, the mean of the weighted per-sample losses."""
        if weights is None:
            return F.cross_entropy(logits, targets)
        per_sample = F.cross_entropy(logits, targets, reduction="none")
        return (per_sample * weights.to(per_sample.device, per_sample.dtype)).mean()

    def check(self, logits: Any, targets: Any) -> BatchProblem | None:
        """Class scores (N x C, or N x C x ... with labels N x ...) and integer labels in
        ``[0, C)``."""
        if problem := check_output(logits, targets, "class scores (N x C logits)"):
            return problem
        if logits.dim() < 2:
            return BatchProblem(
                f"the model's output has shape {tuple(logits.shape)}: {type(self).__name__} "
                "takes one row of C class scores per sample (N x C, e.g. a last "
                "nn.Linear(..., num_classes)); for one logit per sample use task=binary")
        if problem := _integer_labels(targets, "class indices 0..C-1", "task=regression"):
            return problem
        if tuple(targets.shape) != (logits.shape[0], *logits.shape[2:]):
            return BatchProblem(
                f"the labels have shape {tuple(targets.shape)} for outputs of shape "
                f"{tuple(logits.shape)}: cross-entropy takes one class index per row of scores "
                "(labels of shape (N,) for outputs N x C); give one integer label per sample")
        return self.check_labels(targets.reshape(-1), logits.shape[1])

    def check_labels(self, labels: torch.Tensor, width: int) -> BatchProblem | None:
        """Labels (1-D, integer) within the model's ``width`` classes; the row is the first
        label outside them."""
        bad = ((labels < 0) | (labels >= width)).nonzero()
        if not len(bad):
            return None
        row = int(bad[0])
        return BatchProblem(
            f"label {int(labels[row])} is outside the model's {width} classes (0..{width - 1}): "
            f"number the classes 0..C-1, or make the model's output as wide as the classes "
            f"(its num_classes)", row)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)

    def count_correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Number of right predictions in the batch, as a tensor on the batch's device."""
        return (self.predict(logits) == targets).sum()

    def metrics(self, loss_sum: float, correct: float, count: float) -> dict[str, float]:
        count = max(count, 1.0)
        return {"loss": loss_sum / count, "accuracy": correct / count}


class Binary(Classification):
    """Two classes from one logit per sample: binary cross-entropy on the logit (numerically
    stable, no sigmoid layer in the model); a prediction is class 1 where the logit is > 0."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        if logits.numel() != targets.numel():
            raise UserError(
                f"task=binary takes one logit per sample, the model gives {logits.shape[-1]}; "
                "use task=classification for more than two classes"
            )
        logits = logits.reshape(targets.shape)
        per_sample = F.binary_cross_entropy_with_logits(
            logits, targets.to(logits.dtype), reduction="none"
        )
        if weights is not None:
            per_sample = per_sample * weights.to(per_sample.device, per_sample.dtype)
        return per_sample.mean()

    def check(self, logits: Any, targets: Any) -> BatchProblem | None:
        """One logit per sample and labels 0 or 1."""
        if problem := check_output(logits, targets, "logits (one per sample)"):
            return problem
        if not isinstance(targets, torch.Tensor) or logits.numel() != targets.numel():
            return BatchProblem(
                f"task=binary takes one logit per sample; the model gives outputs of shape "
                f"{tuple(logits.shape)} for {len(logits)} samples: use task=classification "
                "for more than two classes")
        return self.check_labels(targets.reshape(-1), 2)

    def check_labels(self, labels: torch.Tensor, width: int = 2) -> BatchProblem | None:
        bad = ((labels != 0) & (labels != 1)).nonzero()
        if not len(bad):
            return None
        row = int(bad[0])
        return BatchProblem(f"label {labels[row].item():g} is not 0 or 1, which task=binary "
                            "takes; use task=classification for more classes", row)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.reshape(len(logits)) > 0).long()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-class probabilities (N x 2), as a softmax gives for Classification."""
        p = torch.sigmoid(logits.reshape(len(logits)).float())
        return torch.stack([1 - p, p], dim=1)


class NextToken(Classification):
    """Language modelling: cross-entropy over the vocabulary, plus perplexity = exp(loss)."""

    def metrics(self, loss_sum: float, correct: float, count: float) -> dict[str, float]:
        values = super().metrics(loss_sum, correct, count)
        return {**values, "perplexity": math.exp(min(values["loss"], 700.0))}


class Regression(Task):
    """Mean squared error on one output per sample; the only metric is the MSE itself."""

    def counts(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.count_correct(outputs, targets).reshape(1)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        per_sample = (outputs.reshape(targets.shape) - targets).square()
        if weights is not None:
            per_sample = per_sample * weights.to(per_sample.device, per_sample.dtype)
        return per_sample.mean()

    def check(self, outputs: Any, targets: Any) -> BatchProblem | None:
        """One value per target (MSE compares them one to one)."""
        if problem := check_output(outputs, targets, "predicted values"):
            return problem
        if not isinstance(targets, torch.Tensor):
            return BatchProblem(f"the targets are a {describe(targets)}, not a tensor of values")
        if outputs.numel() != targets.numel():
            per_sample = outputs.numel() // max(len(outputs), 1)
            return BatchProblem(
                f"the model gives {per_sample} value(s) per sample (shape "
                f"{tuple(outputs.shape)}) for targets of shape {tuple(targets.shape)}: "
                "regression compares them one to one; make the model's last layer as wide as "
                "the targets (for class labels use task=classification)")
        return None

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.squeeze(-1)

    def count_correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """No notion of a correct prediction: always 0 (the count keeps the sums' shape)."""
        return torch.zeros((), dtype=torch.long, device=outputs.device)

    def metrics(self, loss_sum: float, correct: float, count: float) -> dict[str, float]:
        return {"loss": loss_sum / max(count, 1.0)}


def _integer_labels(targets: Any, what: str, instead: str) -> BatchProblem | None:
    if not isinstance(targets, torch.Tensor):
        return BatchProblem(f"the labels are a {describe(targets)}, not a tensor of {what}; "
                            "give each sample's label as an integer")
    if targets.is_floating_point() or targets.dtype == torch.bool:
        return BatchProblem(
            f"the labels are {str(targets.dtype).removeprefix('torch.')}, not integers: the "
            f"task takes {what} (torch.long); give the Dataset's labels as int (real-valued "
            f"targets: {instead})")
    return None


def sum_width(task) -> int:
    """How many sums a batch of this task adds up: loss, correct, count, then its extras."""
    return 3 + len(getattr(task, "extra_sums", ()))


def batch_counts(task, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[correct, *extra_sums]`` for one batch (a task without ``counts``: its correct count),
    checked against the task's declared width."""
    counts = (task.counts(outputs, targets) if hasattr(task, "counts")
              else task.count_correct(outputs, targets).reshape(1))
    width = sum_width(task) - 2
    if counts.shape != (width,):
        raise UserError(
            f"{type(task).__name__}.counts returned shape {tuple(counts.shape)}; it must return "
            f"[correct, {', '.join(getattr(task, 'extra_sums', ())) or '(no extra sums)'}], "
            f"{width} value(s), one per name in extra_sums after the correct count"
        )
    return counts


def task_metrics(task, sums) -> dict[str, float]:
    """The task's metrics from its summed values ``[loss_sum, correct, count, *extras]``."""
    loss_sum, correct, count, *extra = (float(v) for v in sums)
    names = getattr(task, "extra_sums", ())
    return task.metrics(loss_sum, correct, count, **dict(zip(names, extra, strict=True)))


# What a run without a validation split (data.val_fraction=0) evaluates during training and
# selects on: the training loss of the epoch so far (lower is better).
TRAINING_LOSS = "train/epoch_loss"


def eval_metric_names(task, prefix: str = "val/") -> list[str] | None:
    """The ``<prefix><name>`` metrics an evaluation of ``task`` reports, known before
    training (its ``metrics`` on all-zero sums); None where the task cannot say without
    data."""
    try:
        names = task_metrics(task, [0.0] * sum_width(task))
    except Exception:  # noqa: BLE001 (a task's own metrics may divide by a count of 0)
        return None
    return [f"{prefix}{name}" for name in names]


def selection_metric(run, key: str, metric: str, maximise: bool) -> tuple[str, bool]:
    """What a choice configured on ``metric`` (the config key ``key``) watches in ``run``:
    ``metric`` itself where the run has a validation split, the training loss (lower is
    better) where it has none; a name from before validation splits (``eval/...``, which was
    the test split) is refused in one line."""
    if metric.startswith("eval/"):
        raise UserError(
            f"{key}={metric}: evaluations during training are on the validation split and "
            f"report val/<name>; use {key}=val/{metric[5:]} (the test split is evaluated once, "
            "at the end: test_* in metrics.json)")
    if run.data.val is None and metric.startswith("val/"):
        return TRAINING_LOSS, False
    return metric, maximise


def selection_names(run) -> list[str] | None:
    """The metrics a run's evaluations during training report (see :func:`selection_metric`)."""
    return eval_metric_names(run.task, "val/" if run.data.val is not None else "train/epoch_")

