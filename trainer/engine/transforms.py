"""Model transforms: what the framework, and a user, change in a built model before it
trains, as one ordered list.

A transform is a :class:`ModelTransform`: ``apply(model, build)`` returns the changed model
(changed in place, or a new module around it); ``build`` (:class:`BuildContext`) holds what a
transform may need (the config, the backend, the data, the device and dtype). Optionally:

- ``after``: names of transforms that, where the list has them, must come before this one; the
  build refuses a list that breaks it, naming both;
- ``wraps = True``: the result only wraps the model for the forward pass (``torch.compile``):
  checkpoints keep holding the module it was given, and nothing after it may change the model;
- ``after_optimizer(model, optimizer)``: called once the optimizer exists.

The run's list (:func:`run_transforms`) is, in order: Ghost BatchNorm, SyncBatchNorm, the move
to the run's device and dtype, pretrained weights (a model with ``load_pretrained``), QAT's
fake-quantization graph, per-sample dropout, the config's ``transforms:`` and ``trainer.fit``'s
(each where its ``after`` allows, else here), the first stage's freezing, then the forward
wrappers: ``torch.compile``. A sharded-data-parallel wrapper (FSDP2's per-block
``fully_shard``) belongs after freezing and before compile: it shards what trains, and the
compiled forward must see the sharded modules. Every transform runs from the shared seed, on
every rank alike, so the replicas start equal; each rank draws from its own stream only after
the list.

A user's transform is configured like a callback (``transforms.NAME`` with a ``_target_``;
``transforms.NAME=null`` removes one, the built-ins included) or given to ``trainer.fit``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from trainer.config.instantiate import safe_instantiate
from trainer.errors import UserError


@dataclass
class BuildContext:
    """What a transform may read while the run is being built (``run`` does not exist yet).
    Fields a rebuild from a checkpoint alone lacks (trainer-predict) are None there."""

    cfg: DictConfig | None
    backend: Any  # trainer.parallel.backends.Backend
    device: torch.device
    dtype: torch.dtype
    data: Any = None  # trainer.data.InMemoryData
    logger: Any = None  # trainer.io.logger.Logger
    batch_position: Any = None  # trainer.parallel.sample_dropout.BatchPosition

    @property
    def seed(self) -> int:
        return int(self.cfg.trainer.seed)


class ModelTransform:
    """A change to the model before training; subclass it and override ``apply``."""

    name = "transform"
    after: tuple[str, ...] = ()
    wraps = False

    def apply(self, model: torch.nn.Module, build: BuildContext) -> torch.nn.Module:
        return model

    def after_optimizer(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Once the optimizer over the transformed model exists."""


class GhostBatchNormTransform(ModelTransform):
    """``model.ghost_batch_size``: every BatchNorm normalises slices of that many samples."""

    name = "ghost_bn"

    def __init__(self, size: int) -> None:
        self.size = size

    def apply(self, model, build):
        from trainer.norms.base import BatchNorm
        from trainer.norms.ghost import apply_ghost_batchnorm

        if not any(isinstance(m, BatchNorm) for m in model.modules()):
            raise UserError(
                f"model.ghost_batch_size={self.size}: {type(model).__name__} has no BatchNorm "
                "layer for Ghost BN to act on; remove model.ghost_batch_size (or give the "
                "model BatchNorm, e.g. model.norm=batch where it has that option)")
        return apply_ghost_batchnorm(model, self.size)


class SyncBatchNormTransform(ModelTransform):
    """``model.sync_bn`` on several workers: BatchNorm statistics over the global batch."""

    name = "sync_bn"

    def apply(self, model, build):
        from trainer.norms.sync import convert_sync_batchnorm

        return convert_sync_batchnorm(model, build.backend.all_reduce_sum)


class ToDevice(ModelTransform):
    """The run's device and dtype. Weights are initialised in float32 either way, so float64
    runs start from the same values (optimizer state follows the parameters' dtype)."""

    name = "to_device"

    def apply(self, model, build):
        return model.to(device=build.device, dtype=build.dtype)


class Pretrained(ModelTransform):
    """Weights from outside the checkpoint (ImageNet), for a model with ``load_pretrained``;
    first on each node, so that a download happens once per machine. A resumed run
    overwrites them."""

    name = "pretrained"
    after = ("to_device",)

    def apply(self, model, build):
        if hasattr(model, "load_pretrained"):
            build.backend.first_on_each_node(model.load_pretrained)
        return model


class QATPrepare(ModelTransform):
    """``quant=qat``: the model as a graph with fake quantization (captured on two test
    samples in the run's device and dtype)."""

    name = "qat"
    after = ("to_device", "pretrained")

    def apply(self, model, build):
        from trainer.quant.qat import QATModel, example_batch

        return QATModel(model, example_batch(build.data))


class SampleDropoutTransform(ModelTransform):
    """``trainer.dropout_masks=per_sample``: each sample's dropout mask from (seed, step, its
    global index), so N workers drop what one worker drops."""

    name = "sample_dropout"

    def apply(self, model, build):
        from trainer.parallel.sample_dropout import apply_sample_dropout

        kept = apply_sample_dropout(model, build.seed, build.batch_position)
        if kept:
            build.logger.warning(
                f"trainer.dropout_masks=per_sample: {', '.join(kept)} draw their own dropout "
                "inside the module (RNN/attention dropout=), which keeps per-worker masks"
            )
        return model


class Freeze(ModelTransform):
    """The first stage of ``trainer.stages``: its submodules frozen (later stages switch in
    the stage_switch callback)."""

    name = "freeze"

    def __init__(self, names) -> None:
        self.names = list(names)

    def apply(self, model, build):
        from trainer.engine.stages import freeze

        freeze(model, self.names)
        return model


class Compile(ModelTransform):
    """``trainer.compile``: ``torch.compile`` of the model (the backend wraps the result:
    DDP's hooks and Horovod's stay outside the compiled graph); on the CPU, inductor's C++
    backend."""

    name = "compile"
    wraps = True

    def apply(self, model, build):
        first = next(model.parameters(), None)
        if (first is None or first.device.type == "cpu") and not (
                shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
            raise UserError("trainer.compile=true on the CPU needs a C++ compiler (inductor "
                            "generates C++): install g++ (apt install g++), or "
                            "trainer.compile=false")
        return torch.compile(model)


def structure_transforms(model_cfg: DictConfig, world_size: int) -> list[ModelTransform]:
    """The transforms that decide the model's modules (and so its checkpoint's keys), from the
    ``model`` group alone: what rebuilding a model from a checkpoint applies too."""
    if model_cfg.ghost_batch_size and model_cfg.sync_bn:
        raise UserError(
            "model.ghost_batch_size and model.sync_bn both set: Ghost BN normalises small "
            "slices of each worker's batch, SyncBN the whole global batch; choose one"
        )
    transforms: list[ModelTransform] = []
    if model_cfg.ghost_batch_size:
        transforms.append(GhostBatchNormTransform(model_cfg.ghost_batch_size))
    if model_cfg.sync_bn and world_size > 1:
        transforms.append(SyncBatchNormTransform())
    return [*transforms, ToDevice()]


def run_transforms(cfg: DictConfig, world_size: int, given=()) -> list[ModelTransform]:
    """The run's ordered list: the built-ins its config asks for, the config's
    ``transforms:`` and ``given`` (``trainer.fit``'s) where their ``after`` allows, else
    before freezing; ``transforms.NAME=null`` removes one by name."""
    loop = cfg.trainer
    built_in = [*structure_transforms(cfg.model, world_size), Pretrained()]
    if cfg.quant.mode == "qat":
        built_in.append(QATPrepare())
    elif loop.dropout_masks == "per_sample":
        # (A QAT graph has no dropout modules to swap: its dropout keeps per-worker masks.)
        built_in.append(SampleDropoutTransform())
    tail: list[ModelTransform] = []
    if loop.stages:
        tail.append(Freeze(loop.stages[0].freeze))
    if loop.compile:
        tail.append(Compile())
    removed = {str(name) for name, node in cfg.get("transforms", {}).items() if node is None}
    users = [_configured(name, node) for name, node in cfg.get("transforms", {}).items()
             if node is not None]
    for i, transform in enumerate(given):
        users.append(_checked(transform, f"transforms[{i}]"))
    ordered = [t for t in built_in if t.name not in removed]
    default = len(ordered)  # where a transform that names nothing to come after goes
    ordered += [t for t in tail if t.name not in removed]
    for transform in users:
        slot = default  # or right after the last transform its `after` names, if later
        for i, earlier in enumerate(ordered):
            if earlier.name in transform.after:
                slot = max(slot, i + 1)
        ordered.insert(slot, transform)
        default += slot <= default
    check_order(ordered)
    return ordered


def _configured(name, node) -> ModelTransform:
    transform = safe_instantiate(node, f"transforms.{name}")
    transform = _checked(transform, f"transforms.{name}")
    if transform.name == ModelTransform.name:
        transform.name = str(name)
    return transform


def _checked(transform: Any, where: str) -> ModelTransform:
    if not isinstance(transform, ModelTransform):
        raise UserError(f"{where} is a {type(transform).__name__}, not a "
                        "trainer.ModelTransform; subclass it and override apply(model, build)")
    return transform


def check_order(transforms: list[ModelTransform]) -> None:
    """Refuse a list that runs a transform before one it must come after, or changes the
    model after a forward wrapper."""
    position = {t.name: i for i, t in enumerate(transforms)}
    wrapped_by = None
    for i, transform in enumerate(transforms):
        for name in transform.after:
            if name in position and position[name] > i:
                raise UserError(f"model transform '{transform.name}' must come after "
                                f"'{name}', which the list has later; reorder them")
        if wrapped_by is not None and not transform.wraps:
            raise UserError(f"model transform '{transform.name}' changes the model after "
                            f"'{wrapped_by}' wrapped it for the forward pass; move it before")
        if transform.wraps:
            wrapped_by = transform.name


def apply_transforms(model: torch.nn.Module, transforms: list[ModelTransform],
                     build: BuildContext) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(model, forward)``: the model checkpoints hold, and what the backend wraps (the same
    module unless a transform wraps it)."""
    forward = model
    for transform in transforms:
        result = transform.apply(forward, build)
        if not isinstance(result, torch.nn.Module):
            raise UserError(f"model transform '{transform.name}' returned a "
                            f"{type(result).__name__}, not a torch.nn.Module; return the model")
        forward = result
        if not transform.wraps:
            model = result
    return model, forward
