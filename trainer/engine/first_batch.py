"""The first micro-batch a process trains on, checked against the task before its loss.

A model or data that cannot fit the task (3 logits for 10 classes, float labels, labels 1..10,
B+1 rows, a detached output, 13 features into a 12-input layer) otherwise ends in a traceback
from deep inside the loss or a layer, or worse, trains: ``num_classes=5`` on 3 classes runs
without a word. Here the first training forward of each process (fresh or resumed, every rank)
goes through :func:`check_first_forward`: the model's output and the batch's targets are
handed to the task's ``check`` (trainer/tasks.py) before the loss sees them, and a problem
becomes one line naming it, the sample it was found in (its index in the training set) and
the fix. In-memory data (all labels at hand: training and validation) is checked whole, so a
bad label anywhere is found before the first step, not in the epoch that draws it.

It is the real step's own forward, wrapped for that one call: nothing runs twice, no random
number is drawn that the run would not draw, and the step's result is what it always was.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from trainer.data.batch import rows, split
from trainer.data.memory import TensorSplit
from trainer.data.validation import origin
from trainer.errors import UserError
from trainer.tasks import Binary, Classification, NextToken

# Torch's words for the two mistakes of shape a first forward makes, and what they mean here.
_MATMUL = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")
_ONE_PER_CHANNEL = "Expected more than 1 value per channel when training"


def check_first_forward(run) -> None:
    """Route the next training forward of ``run`` through the checks (once)."""
    plain = run.feed
    pending = [True]

    def feed(model: torch.nn.Module, batch: Any) -> tuple[Any, Any]:
        if not pending or not torch.is_grad_enabled():  # (an evaluation before the step)
            return plain(model, batch)
        pending.clear()
        run.feed = plain  # the next steps call the task directly
        try:
            outputs, targets = plain(model, batch)
        except (RuntimeError, ValueError) as exc:
            if (line := _shape_error(run, exc)) is not None:
                raise UserError(line) from None
            raise
        _check(run, outputs, targets)
        return outputs, targets

    run.feed = feed


def explain_step_failure(run, batch: Any) -> UserError | None:
    """After a training step raised (the loss's ``Target -1 is out of bounds`` at step 40, a
    label the first batch did not have): the task's ``check`` over each micro-batch of
    ``batch``, its forward run again; a UserError naming the step and the sample where the
    check finds the cause, else None (the step's own error stands)."""
    check = task_check(run.task)
    if check is None:
        return None
    position, step = run.batch_position, run.progress.step
    first = run.loader.first_row
    try:
        with torch.enable_grad():
            for part in split(batch, run.micro_batches):
                position.set(step, first, rows(part))
                outputs, targets = run.feed(run.forward, part)
                if (problem := check(outputs, targets)) is not None:
                    where = (f" (sample {_sample_index(run, problem.row)} of the training set)"
                             if problem.row is not None else "")
                    return UserError(f"step {step + 1}: {problem.text}{where}")
                first += rows(part)
    except Exception:  # noqa: BLE001 (it fails again as it did: the step's error stands)
        return None
    finally:
        position.clear()
    return None


def explain_evaluation_failure(task, model: torch.nn.Module, feed, batch: Any, part,
                               first_row: int, name: str, whose: str) -> UserError | None:
    """After an evaluation batch raised (a Dataset read item by item shows its validation or
    test labels only here: ``Target 12 is out of bounds``): the task's ``check`` over that
    batch, its forward run again with gradients on (the check asks for an output in the
    autograd graph); a UserError naming the split and the sample (its index in ``whose``
    set, the data as given) where the check finds the cause, else None (the error stands)."""
    check = task_check(task)
    if check is None:
        return None
    try:
        with torch.enable_grad():
            problem = check(*feed(model, batch))
    except Exception:  # noqa: BLE001 (it fails again as it did: the evaluation's error stands)
        return None
    if problem is None:
        return None
    where = (f" (sample {origin(part, first_row + problem.row)} of the {whose} set)"
             if problem.row is not None else "")
    return UserError(f"the {name} data: {problem.text}{where}")


def task_check(task: Any):
    """The task's ``check``, where it was written for the task's own ``forward`` and ``loss``:
    a task that inherits a built-in check but defines its own forward or loss (several
    outputs, a loss of its own) is checked only by a ``check`` of its own."""
    cls = type(task)
    owner = next((c for c in cls.__mro__ if "check" in c.__dict__), None)
    if owner is None:
        return None
    for name in ("forward", "loss"):
        definer = next((c for c in cls.__mro__ if name in c.__dict__), None)
        if definer is not None and definer is not owner and issubclass(definer, owner):
            return None
    return task.check


def _check(run, outputs: Any, targets: Any) -> None:
    task = run.task
    check = task_check(task)
    if check is None:
        return
    problem = check(outputs, targets)
    if problem is None and isinstance(task, Classification):
        _check_whole_splits(run, task, outputs)
        _warn_unused_classes(run, task, outputs)
        return
    if problem is not None:
        where = (f" (sample {_sample_index(run, problem.row)} of the training set)"
                 if problem.row is not None else "")
        raise UserError(f"the first batch: {problem.text}{where}")


def _check_whole_splits(run, task: Classification, logits: torch.Tensor) -> None:
    """Every label of in-memory training and validation data against the model's classes, at
    once (a bad label in the validation split would otherwise end the first evaluation)."""
    width = logits.shape[1] if logits.dim() > 1 else 1
    for name, part in (("training", run.data.train), ("validation", run.data.val)):
        labels = _labels(part)
        if labels is None or labels.is_floating_point():
            continue
        if (problem := task.check_labels(labels.reshape(-1), width)) is not None:
            # Held-out validation rows are rows of the training data as given.
            whose = "training" if getattr(run.data, "held_out", False) else name
            raise UserError(f"the {name} data: {problem.text} (sample "
                            f"{origin(part, problem.row)} of the {whose} set)")


def _labels(split) -> torch.Tensor | None:
    """An in-memory split's labels, one per row; None for a Dataset (read item by item)."""
    if not isinstance(split, TensorSplit) or not isinstance(split.targets, torch.Tensor):
        return None
    return split.targets if split.targets.dim() == 1 else None


def _warn_unused_classes(run, task: Classification, logits: torch.Tensor) -> None:
    """A model wider than the labels (num_classes=5 on 3 classes) trains, and its extra
    outputs learn only never to be chosen: likely a mistake, said once. (Not for a language
    model: its vocabulary holds words that are never a next word.)"""
    labels = _labels(run.data.train)
    if labels is None or not len(labels) or isinstance(task, Binary | NextToken):
        return
    width = logits.shape[1]
    seen = int(labels.max()) + 1
    if seen < width:
        run.logger.warning(
            f"the model has {width} class outputs but the training labels are 0..{seen - 1} "
            f"({seen} classes): {width - seen} output(s) never have a sample; make the model "
            f"as wide as the classes (its num_classes={seen}) unless that is on purpose")


def _sample_index(run, row: int) -> int | str:
    """The training-set index (in the data as given, before a validation split was held out
    of it) of ``row`` of the micro-batch being checked."""
    loader, progress = run.loader, run.progress
    try:  # (batch_position.first: where the micro-batch starts in the global batch)
        return origin(run.data.train, loader.sample_at(
            progress.epoch, progress.offset + run.batch_position.first + row))
    except (IndexError, AttributeError):
        return f"row {row} of the first micro-batch"


def _shape_error(run, exc: Exception) -> str | None:
    """One line for the shape mistakes torch reports from inside a layer."""
    text = str(exc)
    if found := _MATMUL.search(text):
        _, given, takes, _ = (int(g) for g in found.groups())
        return (f"the first batch: a Linear layer of the model takes {takes} features and got "
                f"{given} (torch: mat1 and mat2 shapes cannot be multiplied); make the model's "
                f"input width match the data's (its in_features={given}, where the model has "
                "that option), or check the flatten()/reshape before that layer")
    if _ONE_PER_CHANNEL in text:
        return (f"the first batch: BatchNorm got one value per channel (a micro-batch of "
                f"{run.loader.batch_size // run.micro_batches} sample(s) per worker), which "
                "it cannot normalise; train with at least 2 samples per micro-batch per worker "
                "(data.batch_size, trainer.accumulate), or model.sync_bn=true on several "
                "workers")
    return None
