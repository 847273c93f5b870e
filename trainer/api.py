"""``trainer.fit``: the run of the ``trainer`` command, called from Python.

    import trainer
    metrics = trainer.fit(["recipe=mnist", "trainer.epochs=2"], model=MyNet(),
                          data=(train_set, test_set), callbacks=[MyCallback()])

The same script runs on N workers unchanged (``torchrun --nproc-per-node 4 train.py``,
``mpirun``, ``srun``): the backend comes from the launcher's environment, as for the CLI.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from trainer.callbacks import Callback
from trainer.config.schema import framework_keys


def _record(cfg: DictConfig, group: str, obj: Any) -> None:
    """Put what the caller built in the config's place, for the run's record (config.yaml,
    checkpoints): the framework's keys stay, the option's own arguments go, ``_target_`` names
    the object's class."""
    node = cfg[group]
    kept = {k: node[k] for k in framework_keys(group) if k in node}
    with open_dict(cfg):
        cfg[group] = {"_target_": f"{type(obj).__module__}.{type(obj).__qualname__}", **kept}


def fit(overrides: Sequence[str] | DictConfig = (), *, model=None, data=None, task=None,
        callbacks: Iterable[Callback] = (), transforms: Iterable = (),
        run_dir: str | Path | None = None) -> dict:
    """Train and return the final metrics (what ``metrics.json`` holds).

    Args:
        overrides: command-line style overrides (``["recipe=mnist", "data.batch_size=256"]``)
            composed onto the default config, or a composed config.
        model: an ``nn.Module`` to train instead of the config's model (trained in place; the
            framework's model keys such as ``model.sync_bn`` still apply). Build it the same
            way on every rank; rank 0's weights are broadcast before the first step.
        data: a trainer data object (``trainer.data.InMemoryData``, ``trainer.data.Datasets``)
            or ``(train_dataset, test_dataset)`` or ``(train, test, val)`` map-style Datasets of
            ``(input, target)`` (or dicts, several inputs: any structure the task feeds),
            instead of the config's data.
        task: the task instead of the config's (``trainer.tasks``): its loss and metrics, and
            with a ``forward(model, batch)`` of its own how a batch feeds the model.
        callbacks: ``trainer.Callback`` instances, run after the config's own.
        transforms: ``trainer.ModelTransform`` instances, applied to the model after the
            config's own (before freezing and compile, unless their ``after`` says later).
        run_dir: where the run writes (default ``outputs/fit/<time>``); a directory with
            checkpoints resumes (``trainer.resume=auto``).

    Raises:
        trainer.UserError: bad input, one line naming the problem and the fix (never exits
            the interpreter).
    """
    from trainer.config import compose_config
    from trainer.data.datasets import as_data
    from trainer.errors import UserError
    from trainer.tools.train import train

    _check_fit_arguments(overrides, model, task, callbacks, transforms, run_dir)
    if isinstance(overrides, DictConfig):
        cfg = OmegaConf.create(OmegaConf.to_container(overrides, enum_to_str=True))
    else:
        if isinstance(overrides, str):
            overrides = [overrides]
        try:
            cfg = compose_config(*overrides)
        except HydraException as exc:  # a misspelt key, an unknown option: one line
            from trainer.tools.hydra_errors import one_line

            raise UserError(one_line(exc) or str(exc).splitlines()[0]) from None
    data = as_data(data)
    given: dict[str, Any] = {"callbacks": list(callbacks), "transforms": list(transforms)}
    for group, obj in (("model", model), ("data", data), ("task", task)):
        if obj is not None:
            _record(cfg, group, obj)
            given[group] = obj
    if model is not None or data is not None or task is not None:
        with open_dict(cfg):
            cfg.description = "trainer.fit with " + ", ".join(
                f"the given {group} ({type(obj).__name__})"
                for group, obj in (("model", model), ("data", data), ("task", task))
                if obj is not None)
    if run_dir is None:
        run_dir = Path("outputs") / "fit" / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    run_dir = Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    return train(cfg, run_dir, objects=given)


def _check_fit_arguments(overrides, model, task, callbacks, transforms, run_dir) -> None:
    """``trainer.fit``'s arguments, each of its kind, or one line saying what it takes."""
    import os

    import torch

    from trainer.errors import UserError

    def refuse(name: str, takes: str, value: Any) -> None:
        raise UserError(f"trainer.fit({name}=...) takes {takes}, not a {type(value).__name__}")

    if not isinstance(overrides, DictConfig | str) and not (
            isinstance(overrides, Sequence) and all(isinstance(o, str) for o in overrides)):
        refuse("overrides", "a list of 'KEY=VALUE' strings (or a composed config)", overrides)
    if model is not None and not isinstance(model, torch.nn.Module):
        refuse("model", "a torch.nn.Module", model)
    if task is not None and not callable(getattr(task, "loss", None)):
        refuse("task", "a task object with loss(outputs, targets) (trainer.tasks)", task)
    for name, value, one in (("callbacks", callbacks, "callback"),
                             ("transforms", transforms, "transform")):
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise UserError(f"trainer.fit({name}=...) takes a list of {name}, not a "
                            f"{type(value).__name__}; for one: {name}=[your_{one}]")
    if run_dir is not None and not isinstance(run_dir, str | os.PathLike):
        refuse("run_dir", "a folder's path (str or pathlib.Path)", run_dir)


def evaluate(checkpoint: str | Path, overrides: Sequence[str] = (), *, split: str = "test",
             model=None, data=None, task=None, trust: Iterable[str] = (),
             last: bool = False) -> dict[str, float]:
    """A checkpoint's metrics on a split of its run's data: ``{"test_accuracy": ...,
    "test_loss": ..., "test_<the task's own>": ...}``.

    Args:
        checkpoint: a checkpoint file, or a run directory (its ``best.pt``, the best
            evaluation's weights where there is one; ``last=True``: its newest checkpoint).
        overrides: ``KEY=VALUE`` changes to the checkpoint's stored config (keys it has:
            ``data.root=...`` where the data lives now, ``data.eval_batch_size=512``).
        split: ``"test"`` or ``"train"``.
        model, data, task: your own objects instead of the config's, as given to
            ``trainer.fit`` (its checkpoints name their classes, not their arguments). ``data``
            may also be one Dataset: the rows to evaluate on (``split`` is then unused).
        trust: packages whose classes the stored config may build (your own, by name;
            ``TRAINER_TRUST`` too): a checkpoint is never trusted to name any code.

    Runs on N workers unchanged (torchrun, mpirun, srun): each takes its share, the same
    numbers as one worker (in float64, to rounding).
    """
    from trainer.engine.inference import evaluate_restored, restore

    restored = restore(checkpoint, overrides, model=model, data=data, task=task, trust=trust,
                       last=last)
    try:
        return evaluate_restored(restored, split, data)
    finally:
        restored.backend.close()


def predict(checkpoint: str | Path, data=None, overrides: Sequence[str] = (), *,
            split: str = "test", model=None, task=None, trust: Iterable[str] = (),
            last: bool = False) -> list[dict]:
    """A checkpoint's prediction for each row, in order: ``[{"index": 0, "prediction": 3,
    "class": "3", "probability": 0.98, "target": 3}, ...]`` (a classifier's class and its
    probability; a regression's value; a task's own ``predict(outputs)``, nested outputs as
    ``prediction.<key>`` entries; ``target`` where the rows have one).

    Args:
        checkpoint: as for :func:`evaluate`.
        data: the rows: one map-style Dataset (items as the run's, targets optional), a tensor
            of raw inputs (one row each, through the run's data transform), or None for
            ``split`` of the run's own data (from its config, or a data object / pair given
            as to ``trainer.fit``).
        overrides, split, model, task, trust, last: as for :func:`evaluate`.

    On N workers every rank returns the whole list (each predicted its share).
    """
    from torch.utils.data import Dataset

    from trainer.engine.inference import predict_restored, restore

    own_rows = isinstance(data, Dataset) or _is_tensor(data)
    restored = restore(checkpoint, overrides, model=model, data=None if own_rows else data,
                       task=task, trust=trust, last=last, need_data=not own_rows)
    try:
        return predict_restored(restored, split, data if own_rows else None)
    finally:
        restored.backend.close()


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)
