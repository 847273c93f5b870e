"""Build every runtime object of a run from the composed config.

Each builder takes the config node it needs plus the runtime objects it depends on, passed
explicitly; nothing travels through the config but plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from trainer.backends import Backend, build_backend
from trainer.checkpoint import Checkpointer, resolve_resume
from trainer.config.flat import flatten
from trainer.config.validate import validate
from trainer.data import InMemoryData, InMemoryLoader
from trainer.errors import UserError
from trainer.instantiate import safe_instantiate
from trainer.logger import Logger
from trainer.schedule import Schedule
from trainer.seeding import seed_everything

# Keys of the data group that belong to the loop, not to the recipe's data class.
_LOADER_KEYS = ("batch_size", "eval_batch_size", "device")


@dataclass
class Progress:
    """Where a run is; saved in every checkpoint so that a resume continues mid-epoch."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch, 0-based
    batch: int = 0  # batches of the current epoch already consumed
    best: float | None = None  # best early-stop metric so far
    bad_evals: int = 0  # evaluations since it last improved
    train_sums: list[float] = field(default_factory=list)  # task metric sums of this epoch


@dataclass
class Run:
    cfg: DictConfig
    run_dir: Path
    device: torch.device
    backend: Backend
    data: InMemoryData
    loader: InMemoryLoader
    model: torch.nn.Module  # the bare model: what checkpoints hold
    train_model: torch.nn.Module  # the backend's wrapper around it
    task: Any
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    logger: Logger
    checkpointer: Checkpointer
    progress: Progress
    resumed_from: Path | None = None
    resume_state: dict | None = None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"trainer.device={name} but no CUDA device is visible; use cpu or auto")
    return device


def build_data(cfg: DictConfig, device: torch.device) -> InMemoryData:
    data = safe_instantiate(cfg, "data", exclude=_LOADER_KEYS)
    where = device if cfg.device == "auto" else torch.device(cfg.device)
    data.train, data.test = data.train.to(where), data.test.to(where)
    return data


def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    factory = safe_instantiate(cfg, "optimizer")
    return factory(model.parameters())


def build_run(cfg: DictConfig, run_dir: Path) -> Run:
    validate(cfg)
    loop = cfg.trainer
    if loop.threads is not None:
        torch.set_num_threads(loop.threads)
    if loop.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = pick_device(loop.device)
    backend = build_backend(cfg.dist, device)

    logger = Logger(run_dir, cfg, enabled=backend.is_primary)
    checkpointer = Checkpointer(run_dir / "checkpoints", loop.keep_last, backend.is_primary)
    resumed = resolve_resume(loop.resume, run_dir)

    seed_everything(loop.seed)
    data = build_data(cfg.data, device)
    try:
        loader = InMemoryLoader(
            data.train, cfg.data.batch_size, seed=loop.seed, rank=backend.rank,
            world_size=backend.world_size, transform=data.transform,
        )
    except ValueError as exc:
        raise UserError(f"data.batch_size={cfg.data.batch_size}: {exc}; choose another") from None

    model = safe_instantiate(cfg.model, "model").to(device)
    train_model = backend.wrap_model(model)
    optimizer = build_optimizer(cfg.optimizer, model)
    schedule = safe_instantiate(cfg.schedule, "schedule")
    schedule.attach(optimizer)
    task = safe_instantiate(cfg.task, "task")

    run = Run(
        cfg=cfg, run_dir=run_dir, device=device, backend=backend, data=data, loader=loader,
        model=model, train_model=train_model, task=task, optimizer=optimizer,
        schedule=schedule, logger=logger, checkpointer=checkpointer, progress=Progress(),
    )
    if resumed is not None:
        run.resumed_from, run.resume_state = resumed
    return run


def config_changes(saved: dict, current: DictConfig) -> list[str]:
    """Keys whose value differs from the checkpoint's config (loop length keys excluded)."""
    ignore = ("trainer.resume", "trainer.epochs", "trainer.max_steps")
    old = flatten(saved)
    new = flatten(OmegaConf.to_container(current, resolve=True))
    return sorted(
        k for k in old.keys() | new.keys() if k not in ignore and old.get(k) != new.get(k)
    )
