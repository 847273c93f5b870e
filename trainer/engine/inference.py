"""A trained model put back to work: its metrics on a split, or its prediction for each row of
a split, a Dataset or a tensor of rows; on 1 or N workers with the same numbers (each rank takes
a contiguous share, in order; the sums are reduced and the rows gathered).

Everything is rebuilt from a checkpoint as the training run built it: the stored config (every
``_target_`` in it checked; a package of the user's own is trusted with ``trust``), the model
with the framework's structural transforms (Ghost BN, SyncBN) in the run's dtype, the weights;
the data and the task from the same config, or the caller's own objects instead (what
``trainer.fit`` was given: its checkpoint's config names their classes, not their arguments).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from trainer.config.flat import flatten
from trainer.config.instantiate import (
    check_stored_config,
    check_target,
    safe_instantiate,
    upgrade_stored_config,
)
from trainer.data import InMemoryData
from trainer.data.batch import call_model, cat, inputs_and_targets, tree_map
from trainer.data.datasets import DatasetSplit, as_data
from trainer.data.memory import TensorSplit, eval_batches, prepare_batch
from trainer.engine.build import DTYPES, build_data, build_model, in_dtype, pick_device
from trainer.engine.evaluate import evaluate_split
from trainer.errors import UserError
from trainer.io.checkpoint import open_checkpoint
from trainer.io.checkpoint_read import CheckpointError
from trainer.parallel.backends import Backend, build_backend
from trainer.tasks import forward_of

SPLITS = ("train", "val", "test")


@dataclass
class Restored:
    """A checkpoint's model, task and data, ready on this rank's device."""

    path: Path
    state: dict
    cfg: DictConfig
    backend: Backend
    model: torch.nn.Module
    task: Any
    dtype: torch.dtype
    data: InMemoryData | None

    @property
    def class_names(self) -> list[str]:
        """Found in the data (image folders: saved in the checkpoint), else given in its config
        or fixed by its class (letters, digits)."""
        names = (self.state.get("data") or {}).get("class_names")
        if not names and self.data is not None:
            names = getattr(self.data, "class_names", None)
        if not names:
            names = self.cfg.data.get("class_names") or getattr(
                check_target(self.cfg.data._target_, "data"), "class_names", None)
        return [str(n) for n in names or []]

    def prepare(self, transform: Callable | None = None) -> Callable:
        """How a raw batch becomes the model's input, as in training."""
        if transform is None and self.data is not None:
            transform = self.data.transform  # (build_data made it give the run's dtype)
        else:
            transform = functools.partial(in_dtype, transform or _float, self.dtype)
        return functools.partial(prepare_batch, transform=transform, dtype=self.dtype)


def _float(inputs: torch.Tensor) -> torch.Tensor:
    return inputs.float()


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """``KEY=VALUE`` changes to a stored config (where its data lives now, the evaluation
    batch size, the device): only keys the config has."""
    known = flatten(OmegaConf.to_container(cfg))
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"'{item}' is not an override: write KEY=VALUE, for example "
                            "data.eval_batch_size=512")
        if key not in known and not any(k.startswith(key + ".") for k in known):
            near = get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise UserError(f"{key}: the checkpoint's config has no such key (only the training "
                            f"run's keys can be changed){hint}")
        OmegaConf.update(cfg, key, OmegaConf.select(OmegaConf.from_dotlist([item]), key),
                         merge=False)


def load_trusted(checkpoint: str | Path, trust: Iterable[str] = (), last: bool = False,
                 given: Iterable[str] = ()) -> tuple[Path, dict]:
    """The path and state of a checkpoint file, or of a run directory's ``best.pt`` (its best
    evaluation; ``last``: its newest good checkpoint, also where it has no best.pt), whose
    stored config (in this version's keys) names only trusted classes (``trust``: packages the
    user trusts too; ``given``: groups the caller builds itself, never built from the file)."""
    try:
        path, state = open_checkpoint(Path(checkpoint), best=not last)
    except CheckpointError as why:
        raise UserError(f"{why}; pass a checkpoint file or a run directory") from None
    state["config"] = upgrade_stored_config(state["config"])
    config = state["config"]
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k not in set(given)}
    check_stored_config(config, f"checkpoint {path}", tuple(trust))
    return path, state


def restore(checkpoint: str | Path, overrides: Sequence[str] = (), *, model=None, data=None,
            task=None, trust: Iterable[str] = (), last: bool = False,
            need_data: bool = True) -> Restored:
    """Load ``checkpoint`` (a file, or a run directory: its best.pt, or with ``last`` its newest
    checkpoint), start the backend the launcher's environment asks for, and rebuild the model
    (with its weights), the task and, with ``need_data``, the data."""
    given = [g for g, obj in (("model", model), ("data", data), ("task", task))
             if obj is not None]
    path, state = load_trusted(checkpoint, trust, last, given)
    if "model" not in state or not isinstance(state.get("config"), dict):
        raise UserError(f"{path} holds no model weights and config: it is not a trainer "
                        "checkpoint")
    cfg = OmegaConf.create(state["config"])
    apply_overrides(cfg, overrides)
    dtype = DTYPES.get(str(cfg.trainer.get("dtype", "float32")), torch.float32)
    backend = build_backend(cfg.dist, pick_device(cfg.trainer.device))
    try:
        built = None
        if need_data and not isinstance(data, Dataset):
            built = build_data(cfg.data, backend, dtype, as_data(data),
                               seed=int(cfg.trainer.get("seed", 0)))
        kwargs = state.get("model_kwargs") or (built.model_kwargs() if built else {})
        net = build_model(cfg.model, backend, dtype, model, **kwargs)
        try:
            net.load_state_dict(state["model"])
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            raise UserError(f"the weights in {path} do not fit the model "
                            f"{type(net).__name__} ({lines[-1][:200]}); build the model as "
                            "the run did (the same config, or the same model= object)") from None
        net.eval()
        the_task = task if task is not None else safe_instantiate(cfg.task, "task")
    except BaseException:
        backend.close()
        raise
    return Restored(path, state, cfg, backend, net, the_task, dtype, built)


def _split(restored: Restored, split: str, data: Any):
    """The rows to use: ``data`` when it is one Dataset (or a tensor of rows), else the named
    split of the run's data."""
    if isinstance(data, Dataset):
        return DatasetSplit(data).to(restored.backend.device)
    if isinstance(data, torch.Tensor):
        return TensorSplit(data, torch.zeros(len(data), dtype=torch.long)).to(
            restored.backend.device)
    if split not in SPLITS:
        raise UserError(f"split={split!r} is not a split of the run's data; use "
                        f"{', '.join(SPLITS)}")
    if getattr(restored.data, split, None) is None:
        raise UserError(f"the run has no validation split (its data.val_fraction is "
                        f"{restored.cfg.data.get('val_fraction', 0)}); use train or test")
    return getattr(restored.data, split)


def evaluate_restored(restored: Restored, split: str = "test", data: Any = None
                      ) -> dict[str, float]:
    """The task's metrics on the split (or on ``data``, one Dataset), as ``<split>_<name>``."""
    rows = _split(restored, split, data)
    metrics = evaluate_split(
        restored.model, restored.task, forward_of(restored.task), rows,
        restored.cfg.data.eval_batch_size, restored.backend,
        restored.prepare(_float if isinstance(data, Dataset) else None))
    prefix = "dataset" if isinstance(data, Dataset) else split
    return {f"{prefix}_{name}": value for name, value in metrics.items()}


def _static_transform(data_class: type) -> Callable | None:
    """The data class's ``transform`` where it needs no instance (the image recipes')."""
    found = inspect.getattr_static(data_class, "transform", None)
    return data_class.transform if isinstance(found, staticmethod) else None


def rows_transform(restored: Restored) -> Callable:
    """What a tensor of raw rows goes through before the model: the run's data class's own
    transform (pixels to normalised floats) where it is static, else a cast to floats."""
    data_class = check_target(restored.cfg.data._target_, "data")
    return _static_transform(data_class) or _float


@torch.no_grad()
def predict_restored(restored: Restored, split: str = "test", data: Any = None,
                     batch_size: int | None = None) -> list[dict[str, Any]]:
    """One dict per row, in the rows' order, on every rank: ``index``, the task's
    ``prediction`` (with ``class`` and ``probability`` for a classifier), and the row's
    ``target`` where it has one. Each rank predicts its contiguous share; the shares are
    gathered in rank order."""
    rows = _split(restored, split, data)
    if isinstance(data, torch.Tensor):
        prepare = restored.prepare(rows_transform(restored))
    else:
        prepare = restored.prepare(_float if isinstance(data, Dataset) else None)
    backend, task = restored.backend, restored.task
    own_forward = callable(getattr(task, "forward", None)) and not _is_default_forward(task)
    found: list[dict[str, Any]] = []
    for batch in eval_batches(rows, batch_size or restored.cfg.data.eval_batch_size,
                              rank=backend.rank, world_size=backend.world_size,
                              prepare=prepare):
        if isinstance(data, torch.Tensor):
            outputs, targets = call_model(restored.model, batch[0]), None
        elif own_forward:
            outputs, targets = task.forward(restored.model, batch)
        else:
            inputs, targets = _inputs_and_targets(batch, getattr(task, "target_key", "label"))
            outputs = call_model(restored.model, inputs)
        found.append(_columns(task, outputs, targets))
    mine = _as_rows(found)
    everyone = backend.all_gather_object(mine)
    table = [row for share in everyone for row in share]
    names = restored.class_names
    for index, row in enumerate(table):
        row["index"] = index
        if names and isinstance(row["prediction"], int) and 0 <= row["prediction"] < len(names):
            row["class"] = names[row["prediction"]]
    return [{"index": r.pop("index"), **r} for r in table]


def _is_default_forward(task: Any) -> bool:
    from trainer.tasks import Task

    return getattr(type(task), "forward", None) is Task.forward


def _inputs_and_targets(batch: Any, target_key: str) -> tuple[Any, Any]:
    if type(batch) is tuple and len(batch) == 2:
        return batch
    return inputs_and_targets(batch, target_key)


def _columns(task: Any, outputs: Any, targets: Any) -> dict[str, torch.Tensor]:
    """This batch's columns, each a tensor with one entry per row, on the host."""
    columns: dict[str, Any] = {}
    predict = getattr(task, "predict", None)
    columns["prediction"] = predict(outputs) if callable(predict) else outputs
    probabilities = getattr(task, "probabilities", None)
    if callable(probabilities) and isinstance(outputs, torch.Tensor):
        columns["probability"] = probabilities(outputs).amax(dim=1)
    if targets is not None:
        columns["target"] = targets
    return tree_map(lambda t: t.detach().cpu(), columns)


def _as_rows(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batches of columns as one dict per row; nested outputs become ``name.key`` columns."""
    if not batches:
        return []
    flat: dict[str, torch.Tensor] = {}
    for name, value in cat(batches).items():
        flat.update(_flatten(name, value))
    count = len(next(iter(flat.values())))
    return [{name: _plain(column[i]) for name, column in flat.items()} for i in range(count)]


def _flatten(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flatten(f"{name}.{key}",
                                                                         sub).items()}
    if isinstance(value, tuple | list) and not isinstance(value, torch.Tensor) and value \
            and isinstance(value[0], torch.Tensor | dict | tuple | list):
        return {k: v for i, sub in enumerate(value) for k, v in _flatten(f"{name}.{i}",
                                                                         sub).items()}
    return {name: value}


def _plain(value: Any) -> Any:
    """One row's value as JSON and CSV take it: a number, or a list of them."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.dim() == 0 else value.tolist()
    return value
