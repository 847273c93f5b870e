"""Value checks that a type system cannot express, run before anything is built.

Each failure is one line naming the key, the bad value and what would be accepted.
"""

from __future__ import annotations

import math
from dataclasses import fields
from difflib import get_close_matches
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trainer.config import schema
from trainer.config.instantiate import check_arguments
from trainer.errors import UserError

# Groups with a fixed set of keys; anything else in them (``+trainer.no_such_key=1``) is refused.
_CLOSED_GROUPS = {"trainer": schema.LoopConfig, "dist": schema.DistConfig,
                  "logger": schema.LoggerConfig, "quant": schema.QuantConfig}
# Groups that name a class: their keys are that class's arguments (plus the framework's own).
_OPTION_GROUPS = ("model", "data", "optimizer", "schedule", "task", "noise")


def _require(ok: bool, key: str, value, expected: str) -> None:
    if not ok:
        raise UserError(f"{key}={value} is invalid: {expected}")


def _unknown(key: str, known: set[str]) -> UserError:
    if (line := schema.moved(key)) is not None:
        return UserError(line)
    group, _, name = key.rpartition(".")
    close = get_close_matches(name, sorted(known), n=1)
    hint = f"did you mean {(group + '.') if group else ''}{close[0]}? " if close else ""
    where = f"the {group} group" if group else "the config"
    return UserError(f"{key} is not a key of {where}; {hint}`trainer --cfg job` lists the keys")


def _check_data_class(data: DictConfig) -> None:
    """A torch Dataset named as the data itself gets told how to use it."""
    from torch.utils.data import Dataset

    from trainer.config.instantiate import check_target
    from trainer.data import InMemoryData

    cls = check_target(data._target_, "data")
    if issubclass(cls, Dataset) and not issubclass(cls, InMemoryData):
        raise UserError(
            f"data._target_={data._target_} is a torch Dataset, not a trainer data object: use "
            "data._target_=trainer.data.Datasets with train: and test: each a Dataset's config "
            "(docs/extending.md)"
        )


def check_keys(cfg: DictConfig, given: tuple[str, ...] = ()) -> None:
    """Every key is one something reads: closed groups against their schema, option groups
    against their ``_target_``'s signature (with or without a schema of their own); ``given``:
    groups whose object the caller built (``trainer.fit(model=...)``), not checked."""
    from trainer.engine.stages import stage_optimizer

    top = {f.name for f in fields(schema.TrainConfig)}
    for key in cfg:
        if key not in top:
            raise _unknown(str(key), top)
    for group, cls in _CLOSED_GROUPS.items():
        known = {f.name for f in fields(cls)}
        for key in cfg[group]:
            if key not in known:
                raise _unknown(f"{group}.{key}", known)
    for group in _OPTION_GROUPS:
        if group in given:
            continue
        if "_target_" not in cfg[group]:
            raise UserError(f"{group} has no _target_: choose an option ({group}=NAME) or set "
                            f"{group}._target_=your.Class")
        if group == "data":
            _check_data_class(cfg.data)
        check_arguments(cfg[group], group, schema.framework_keys(group))
    for kind in ("callbacks", "transforms", "logger.outputs"):
        for name, node in OmegaConf.select(cfg, kind).items():
            if node is not None and not isinstance(node, DictConfig):
                raise UserError(
                    f"{kind}.{name}={node} is not an entry's config: give it a class "
                    f"(+{kind}.{name}._target_=your.Class) or remove it ({kind}.{name}=null)")
            if node is not None:
                check_arguments(node, f"{kind}.{name}")
    for i, stage in enumerate(cfg.trainer.stages):
        if stage.optimizer:
            check_arguments(stage_optimizer(cfg.optimizer, stage),
                            f"trainer.stages.{i}.optimizer", schema.framework_keys("optimizer"))


def _check_finite(cfg: DictConfig) -> None:
    """NaN or infinity in a hyper-parameter only shows up later, as a NaN loss blamed on the
    learning rate (or not at all: NaN passes every ``x < 0`` check); refuse it by name."""
    def walk(node, path: str):
        if isinstance(node, float) and not math.isfinite(node):
            _require(False, path, node, "use a finite number")
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}.{i}")

    for group in ("optimizer", "schedule", "noise", "model"):
        walk(OmegaConf.to_container(cfg[group], resolve=True), group)


def _validate_elastic(dist: DictConfig) -> None:
    """dist.elastic and an elastic horovodrun go together: either one alone would run a job that
    dies (or ignores the new workers) at the first change of hosts."""
    from trainer.parallel.identity import horovod_elastic

    launched = horovod_elastic()
    _require(
        launched or not dist.elastic, "dist.elastic", True,
        "it needs an elastic Horovod launch: horovodrun -np N --min-np MIN --max-np MAX "
        "--host-discovery-script SCRIPT ... (torchrun restarts by itself: --nnodes=MIN:MAX "
        "--max-restarts=K with trainer.resume=auto)",
    )
    _require(
        dist.elastic or not launched, "dist.elastic", False,
        "horovodrun started an elastic job (--min-np/--max-np/--host-discovery-script); add "
        "dist.elastic=true",
    )
    _require(
        not dist.elastic or dist.backend in ("auto", "horovod"), "dist.backend", dist.backend,
        "dist.elastic=true runs on Horovod: use dist.backend=auto or horovod",
    )


def check_rules(cfg: DictConfig) -> None:
    """Each key's own range, as its schema field states it (trainer.config.schema.rule): the
    closed groups' keys and the framework's keys of the open groups."""
    import re

    groups = {**_CLOSED_GROUPS, **schema.FRAMEWORK_KEYS}
    for group, cls in groups.items():
        node = cfg[group]
        for f in fields(cls):
            check = f.metadata.get("rule")
            if check is None or f.name not in node:
                continue
            value, key = node[f.name], f"{group}.{f.name}"
            if value is None and check["optional"] or value in check.get("also", ()):
                continue
            number = isinstance(value, int | float) and not isinstance(value, bool)
            ok = (
                (not check.get("whole") or isinstance(value, int) and not isinstance(value, bool))
                and (not check.get("boolean") or isinstance(value, bool))
                and ("choices" not in check or value in check["choices"])
                and ("pattern" not in check
                     or isinstance(value, str) and re.fullmatch(check["pattern"], value))
                and all(number and test(value, check[name])
                        for name, test in _BOUNDS.items() if name in check)
            )
            _require(ok, key, value, check["hint"])


_BOUNDS = {"low": lambda v, b: v >= b, "above": lambda v, b: v > b,
           "below": lambda v, b: v < b}


def validate(cfg: DictConfig, given: tuple[str, ...] = ()) -> None:
    """Every key is known (:func:`check_keys`) and within its own range (:func:`check_rules`);
    then the rules that span several keys, each checked here and only here."""
    check_keys(cfg, given)
    opt, loop = cfg.optimizer, cfg.trainer
    _require("lr" in opt, "optimizer.lr", "(missing)", "every optimizer option sets lr")
    _check_finite(cfg)
    _require(opt.lr > 0, "optimizer.lr", opt.lr, "the learning rate must be > 0")
    # Beyond float32's range the first update overflows ("cannot be converted to type float").
    _require(opt.lr < 3.4e38, "optimizer.lr", opt.lr, "use a learning rate float32 can hold")
    _require(
        opt.get("weight_decay", 0) >= 0, "optimizer.weight_decay", opt.get("weight_decay"),
        "use a value >= 0",
    )
    if "momentum" in opt:
        _require(
            0 <= opt.momentum < 1, "optimizer.momentum", opt.momentum, "use a value in [0, 1)"
        )
    if opt.get("nesterov"):
        _require(
            opt.momentum > 0, "optimizer.nesterov", True,
            "Nesterov momentum needs optimizer.momentum > 0",
        )
    check_rules(cfg)
    _require(
        loop.dtype == "float32" or str(loop.precision) == "32", "trainer.precision",
        loop.precision, "mixed precision (autocast to 16 bits) and trainer.dtype=float64 do not "
        "combine; float64 is for checking numerics: use trainer.precision=32 with it",
    )
    _validate_elastic(cfg.dist)
    _require(
        not (loop.compile and cfg.quant.mode == "qat"), "trainer.compile", True,
        "quant=qat trains an exported (PT2E) graph that torch.compile does not take; use one",
    )
    _validate_stages(loop)
    _validate_quant(cfg)
    _validate_adaptive_batch(cfg)


def _validate_stages(loop: DictConfig) -> None:
    if not loop.stages:
        return
    names = [stage.name for stage in loop.stages]
    _require(len(set(names)) == len(names), "trainer.stages", names, "give each stage its own name")
    for i, stage in enumerate(loop.stages):
        _require(stage.epochs >= 1, f"trainer.stages.{i}.epochs", stage.epochs, "use at least 1")
        opt = stage.optimizer or {}
        if "lr" in opt:
            _require(opt["lr"] > 0, f"trainer.stages.{i}.optimizer.lr", opt["lr"],
                     "the learning rate must be > 0")
    total = sum(stage.epochs for stage in loop.stages)
    _require(
        loop.epochs == total, "trainer.epochs", loop.epochs,
        f"with trainer.stages the run lasts their {total} epochs; change a stage's epochs "
        "(trainer.stages.0.epochs=N) or set trainer.epochs=${sum_epochs:${trainer.stages}}",
    )


def _validate_adaptive_batch(cfg: DictConfig) -> None:
    """data.batch_size=auto and the keys that only mean something with it (settled first:
    trainer.config.batch_size.settle)."""
    from trainer.config.batch_size import is_auto, largest_batch

    data = cfg.data
    if not is_auto(cfg):
        for key in ("batch_size_min", "batch_size_max", "max_micro_batch", "batch_plan"):
            _require(data.get(key) is None, f"data.{key}", data.get(key),
                     "it is for data.batch_size=auto (the batch chosen during training); "
                     f"add data.batch_size=auto, or drop data.{key}")
        return
    _require(cfg.optimizer.scale_lr == "adascale", "optimizer.scale_lr", cfg.optimizer.scale_lr,
             "data.batch_size=auto sets each step's learning rate with AdaScale (the schedule "
             "and trainer.epochs in base-batch units, which a batch that changes needs): use "
             "optimizer=sgd optimizer.scale_lr=adascale")
    _require(largest_batch(cfg) >= data.batch_size_min, "data.batch_size_max",
             data.get("batch_size_max"),
             f"it is below data.batch_size_min={data.batch_size_min}; raise it, or lower "
             "data.batch_size_min")
    if data.get("batch_plan"):  # (read now: a missing or malformed plan before any start)
        from trainer.large_batch.batch_plan import BatchPlan

        BatchPlan.read(Path(data.batch_plan))
    _require(not cfg.trainer.stages, "trainer.stages", "[...]",
             "data.batch_size=auto runs one optimizer (AdaScale keeps its groups' statistics); "
             "use one stage")


def _validate_quant(cfg: DictConfig) -> None:
    quant = cfg.quant
    if quant.mode == "qat":
        from trainer.quant.qat import QATSchedule

        QATSchedule(quant.start_step, quant.freeze_observer_step, quant.freeze_bn_step)
        _require(not cfg.trainer.stages, "trainer.stages", "[...]",
                 "staged training and quant=qat do not combine (QAT trains one captured "
                 "graph); run the stages first, then QAT")
        for key in ("ghost_batch_size", "sync_bn"):
            _require(not cfg.model.get(key), f"model.{key}", cfg.model.get(key),
                     "not supported with quant=qat (the quantizer knows plain BatchNorm only)")
        _require(cfg.trainer.dtype == "float32", "trainer.dtype", cfg.trainer.dtype,
                 "quant=qat trains through torchao's fused fake-quantize kernels, which take "
                 "float32 only; use trainer.dtype=float32 (quant=ptq works from float64 runs)")
