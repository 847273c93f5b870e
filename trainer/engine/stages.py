"""Staged runs (``trainer.stages``): train one part of the model, then more of it.

Transfer learning trains a new head on a frozen pretrained backbone, then unfreezes the
backbone and fine-tunes everything at a small learning rate, often with another optimizer
(Yosinski et al. 2014; the Keras transfer-learning guide). Each stage names the submodules it
freezes and, optionally, its own optimizer; the next stage starts at the epoch boundary after
the previous stage's last epoch. Entering a stage:

- sets ``requires_grad``: a frozen submodule's backward is never computed (on a CPU, most of
  the cost of fine-tuning VGG16 is that backward);
- pins frozen submodules to eval mode, whatever ``model.train()`` says later: a frozen
  BatchNorm must not move its running statistics, and a frozen dropout must not drop (Keras'
  ``base_model(x, training=False)``);
- builds a fresh optimizer over the trainable parameters (new state);
- re-wraps the model and optimizer in the backend: DDP and Horovod hook the all-reduce into
  the parameters that train at wrap time, so the old hooks go and new ones come.

The stage index is part of the run's progress, so a resumed run re-enters the stage its
checkpoint was written in before loading that stage's optimizer state.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import types
from dataclasses import fields

import torch
from omegaconf import DictConfig, OmegaConf

from trainer.config.schema import OptimizerKeys
from trainer.errors import UserError
from trainer.optim.factory import build_optimizer


def first_epochs(stages) -> list[int]:
    """The epoch each stage starts at (one stage starting at 0 when there are none)."""
    return [0, *itertools.accumulate(int(s.epochs) for s in stages)][:-1] or [0]


def stage_of(stages, epoch: int) -> int:
    """The index of the stage that trains ``epoch`` (the last one past the end)."""
    return max(bisect.bisect_right(first_epochs(stages), epoch) - 1, 0)


def _stay_in_eval(module: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    return torch.nn.Module.train(module, False)


def freeze(model: torch.nn.Module, names) -> None:
    """Make exactly the submodules ``names`` frozen (no gradients, eval mode); the rest trains."""
    modules = []
    for name in names:
        try:
            modules.append(model.get_submodule(name))
        except AttributeError:
            children = ", ".join(n for n, _ in model.named_children())
            raise UserError(
                f"trainer.stages: the model has no submodule '{name}' to freeze; its top-level "
                f"submodules are {children} (use dotted names for deeper ones)"
            ) from None
    for module in model.modules():
        module.__dict__.pop("train", None)  # an earlier stage's pin
    model.requires_grad_(True)
    for module in modules:
        module.requires_grad_(False)
        module.train = types.MethodType(_stay_in_eval, module)
        module.train()
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(
            f"trainer.stages: freezing {list(names)} leaves nothing to train; freeze less"
        )


def stage_optimizer(base: DictConfig, stage) -> DictConfig:
    """The optimizer config of a stage: the run's, with the stage's keys replacing its own.

    A stage that names another ``_target_`` keeps only the run's framework keys (lr scaling,
    bias/norm exclusion) and takes the rest from its own keys and the class's defaults.
    """
    override = (stage.optimizer if stage is not None else None) or {}
    if not override:
        return base
    override = OmegaConf.to_container(OmegaConf.create(dict(override)), resolve=True)
    own = OmegaConf.to_container(base, resolve=True)
    if override.get("_target_", own["_target_"]) != own["_target_"]:
        if "lr" not in override:
            raise UserError(
                f"stage '{stage.name}' switches the optimizer to {override['_target_']} but "
                "gives no lr; add trainer.stages.N.optimizer.lr"
            )
        keep = [f.name for f in fields(OptimizerKeys)]
        own = {k: own[k] for k in keep if k in own}
    return OmegaConf.create({**own, **override})


def enter_stage(run, index: int) -> None:
    """Switch a built run (and its backend wrappers) to stage ``index``."""
    stage = run.cfg.trainer.stages[index]
    freeze(run.model, stage.freeze)
    run.backend.release(run.optimizer)
    run.train_model = run.optimizer = None
    gc.collect()  # frees the old DDP reducer or Horovod optimizer, and their gradient hooks
    run.train_model = run.backend.wrap_model(run.forward or run.model)
    run.train_model.train()
    optimizer = build_optimizer(stage_optimizer(run.cfg.optimizer, stage), run.model,
                                run.cfg.data.batch_size)
    run.optimizer = run.backend.wrap_optimizer(optimizer, run.model)
    run.schedule.attach(run.optimizer, steps_per_epoch=run.epoch_steps,
                        total_steps=run.total_steps)
    run.progress.stage = index
