"""A batch of any structure, as a DataLoader collates it: a tensor, a tuple or list, a dict,
nested. What the framework does to a batch (cut it into micro-batches, move it to the device,
cast it to the run's dtype, count its rows, join kept outputs) it does here, over every tensor
of the structure, so the loop, the step and the evaluation never look inside one.

Every tensor of a batch has the batch's rows along its first dimension. A list of per-sample
values that are not tensors (default_collate turns strings into a list of them) is cut like a
tensor. Anything else (a number in a tuple) is passed along as it is.

How a batch feeds the model and the loss is the task's: :func:`inputs_and_targets` and
:func:`call_model` are the built-in tasks' default (trainer/tasks.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from trainer.errors import UserError

_PER_SAMPLE = (str, bytes)  # values default_collate leaves as a list, one per sample


def _is_sample_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, _PER_SAMPLE) for v in value)


def _rebuild(like: Any, items) -> Any:
    """A container of ``like``'s type holding ``items`` (a namedtuple takes them by position)."""
    if isinstance(like, tuple) and hasattr(like, "_fields"):
        return type(like)(*items)
    if isinstance(like, Mapping):
        try:
            return type(like)(items)
        except TypeError:  # a mapping type that cannot be built from pairs
            return dict(items)
    return type(like)(items)


def tree_map(fn: Callable[[torch.Tensor], Any], batch: Any,
             per_sample: Callable[[list], Any] | None = None) -> Any:
    """``batch`` with ``fn`` applied to each tensor (and ``per_sample`` to each list of
    per-sample values, when given); the structure kept."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return _rebuild(batch, [(k, tree_map(fn, v, per_sample)) for k, v in batch.items()])
    if per_sample is not None and _is_sample_list(batch):
        return per_sample(batch)
    if isinstance(batch, tuple | list):
        return _rebuild(batch, [tree_map(fn, v, per_sample) for v in batch])
    return batch


def tensors(batch: Any) -> Iterator[torch.Tensor]:
    """Every tensor of the structure, depth first in its order."""
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, Mapping):
        for value in batch.values():
            yield from tensors(value)
    elif isinstance(batch, tuple | list):
        for value in batch:
            yield from tensors(value)


def rows(batch: Any) -> int:
    """The number of samples in the batch: the first dimension of its first tensor."""
    if (isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[1], torch.Tensor)
            and batch[1].dim()):
        return len(batch[1])  # the usual (inputs, targets): no walk
    for tensor in tensors(batch):
        if tensor.dim():
            return len(tensor)
    raise UserError(f"a batch of {describe(batch)} holds no tensor with a batch dimension; "
                    "a Dataset's items must hold tensors, numbers or arrays")


def split(batch: Any, parts: int) -> list[Any]:
    """``batch`` cut into ``parts`` micro-batches of equal rows, in order, each a view (the
    rows divide evenly: the build checks the batch sizes)."""
    if parts == 1:
        return [batch]
    size = rows(batch) // parts
    return [take(batch, slice(i * size, (i + 1) * size)) for i in range(parts)]


def take(batch: Any, where: slice) -> Any:
    """The rows ``where`` of every tensor and per-sample list of the batch."""
    return tree_map(lambda t: t[where] if t.dim() else t, batch, lambda values: values[where])


def to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    return tree_map(lambda t: t.to(device, non_blocking=non_blocking), batch)


def cast_floats(batch: Any, dtype: torch.dtype) -> Any:
    """Floating-point tensors in ``dtype`` (the run's, trainer.dtype); integer tensors (word
    indices, labels) as they are."""
    return tree_map(lambda t: t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t,
                    batch)


def cat(batches: list[Any]) -> Any:
    """Batches of one structure joined along their rows."""
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(batches)
    if isinstance(first, Mapping):
        return _rebuild(first, [(k, cat([b[k] for b in batches])) for k in first])
    if _is_sample_list(first):
        return [v for b in batches for v in b]
    if isinstance(first, tuple | list):
        return _rebuild(first, [cat([b[i] for b in batches]) for i in range(len(first))])
    return first


def joinable(a: Any, b: Any) -> bool:
    """Whether two batches join along their rows: one structure, each tensor of the same shape
    after its first dimension (a tensor without one never joins)."""
    def shape(batch: Any) -> Any:
        return tree_map(lambda t: tuple(t.shape[1:]) if t.dim() else None, batch,
                        lambda values: "per-sample")

    return shape(a) == shape(b) and all(t.dim() for t in tensors(a))


def elements(batch: Any) -> int:
    """Elements in all of the batch's tensors (what keeping it costs)."""
    return sum(t.numel() for t in tensors(batch))


def describe(batch: Any) -> str:
    """The structure in a few words, for error lines: ``dict(image: 32x1x16x16 float32,
    label: 32 int64)``."""
    if isinstance(batch, torch.Tensor):
        dims = "x".join(str(d) for d in batch.shape) or "scalar"
        return f"{dims} {str(batch.dtype).removeprefix('torch.')}"
    if isinstance(batch, Mapping):
        inner = ", ".join(f"{k}: {describe(v)}" for k, v in batch.items())
        return f"{type(batch).__name__}({inner})"
    if _is_sample_list(batch):
        return f"{len(batch)} {type(batch[0]).__name__}s"
    if isinstance(batch, tuple | list):
        return f"{type(batch).__name__}({', '.join(describe(v) for v in batch)})"
    return type(batch).__name__


def inputs_and_targets(batch: Any, target_key: str = "label") -> tuple[Any, Any]:
    """The default split of a batch into what the model takes and what the loss compares to:

    - ``(inputs, targets)`` (a tuple or list of two): as they are;
    - ``(x1, x2, ..., targets)``: the model's inputs are all but the last;
    - a dict: ``targets`` is ``batch[target_key]`` (task.target_key), the inputs the other keys;
    - a tensor: the inputs alone, no targets (None).
    """
    if isinstance(batch, Mapping):
        if target_key not in batch:
            raise UserError(
                f"the batch is a {describe(batch)} without the key '{target_key}' for the "
                "targets; set task.target_key to the key that holds them, or give the task "
                "its own forward(model, batch)"
            )
        return {k: v for k, v in batch.items() if k != target_key}, batch[target_key]
    if isinstance(batch, tuple | list) and not _is_sample_list(batch):
        if len(batch) == 2:
            return batch[0], batch[1]
        if len(batch) > 2:
            return tuple(batch[:-1]), batch[-1]
        if len(batch) == 1:
            return batch[0], None
    return batch, None


def call_model(model: torch.nn.Module, inputs: Any) -> Any:
    """The model on the inputs: a tuple or list as positional arguments, a dict as keyword
    arguments, a tensor as the one argument."""
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple | list) and not _is_sample_list(inputs):
        return model(*inputs)
    return model(inputs)
