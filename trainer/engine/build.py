"""Build every runtime object of a run from the composed config.

Each builder takes the config node it needs plus the runtime objects it depends on, passed
explicitly; nothing travels through the config but plain values.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from trainer.callbacks import CallbackList
from trainer.callbacks.from_config import build_callbacks
from trainer.config import batch_size
from trainer.config.consistency import check_same_config
from trainer.config.instantiate import safe_instantiate
from trainer.config.schema import framework_keys
from trainer.data import InMemoryData, InMemoryLoader
from trainer.data.memory import prepare_batch
from trainer.data.validation import hold_out
from trainer.engine.cadence import StepCadence
from trainer.engine.precision import Precision
from trainer.engine.progress import Progress
from trainer.engine.seeding import seed_everything, worker_seed
from trainer.engine.stages import stage_optimizer
from trainer.engine.transforms import (
    BuildContext,
    apply_transforms,
    run_transforms,
    structure_transforms,
)
from trainer.errors import UserError
from trainer.io.checkpoint import Checkpointer
from trainer.io.logger import Logger
from trainer.io.state import ModelState, OptimizerState, ProgressState, RNGState
from trainer.large_batch.noise_scale import NoiseScale, plan_noise_scale
from trainer.norms.ghost import check_ghost_batches
from trainer.optim.factory import build_optimizer, most_epochs
from trainer.optim.schedule import Schedule
from trainer.parallel.backends import Backend
from trainer.parallel.sample_dropout import BatchPosition
from trainer.tasks import forward_of

# Keys of the data, model and optimizer groups that the framework applies itself.
_LOADER_KEYS = framework_keys("data")
_MODEL_FRAMEWORK_KEYS = framework_keys("model")


@dataclass
class Run:
    cfg: DictConfig
    run_dir: Path
    device: torch.device
    backend: Backend
    data: InMemoryData
    loader: InMemoryLoader
    model: torch.nn.Module  # the bare model: what checkpoints hold
    train_model: torch.nn.Module  # the backend's wrapper around `forward`
    task: Any
    # How a (micro-)batch feeds the model: ``feed(model, batch) -> (outputs, targets)``, the
    # task's own ``forward`` or the default (trainer.tasks.forward_of).
    feed: Any
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    precision: Precision
    logger: Logger
    checkpointer: Checkpointer
    progress: Progress
    total_steps: int  # optimizer steps the whole run takes
    epoch_batches: list[int]  # the global batch of each epoch (grown by schedule=increase_batch)
    epoch_steps: list[int]  # optimizer steps of each epoch
    noise: Any  # trainer.large_batch.grad_noise: NoNoise, Annealed or SmallBatch
    micro_batches: int  # per optimizer step (trainer.accumulate, or 2 to measure B_simple)
    noise_scale: NoiseScale | None  # the B_simple estimate, when measured
    # What the backend wraps: the model, or torch.compile's module around it (trainer.compile),
    # which shares its parameters, so checkpoints hold the same keys either way.
    forward: torch.nn.Module | None = None
    # Where the current forward's rows sit in the global batch (per-sample dropout masks).
    batch_position: BatchPosition = field(default_factory=BatchPosition)
    callbacks: CallbackList = field(default_factory=lambda: CallbackList({}))
    # Components whose per-step device values are averaged over workers in the log line's one
    # all-reduce, with the losses: ``to_average()`` -> a 1-D tensor or None, then
    # ``averaged(values)`` with the averages (the B_simple estimate's small-batch norms).
    averaged: list = field(default_factory=list)
    resumed_from: Path | str | None = None  # a checkpoint, or words for state held in memory
    resume_state: dict | None = None
    stop_reason: str = ""  # set by request_stop: the run ends after this step
    # Set by a component whose own measure of the run's length is reached (AdaScale's
    # scale-invariant progress), on every rank at the same step: the run ends after it.
    finished: bool = False
    # When to evaluate and checkpoint between epoch ends (trainer/engine/cadence.py); a
    # component measuring progress in other units (AdaScale) replaces it.
    cadence: Any = None
    # This step only (set in on_step_start, cleared after on_step_end): more micro-batches
    # than ``micro_batches``, for a component that measures within some steps (AdaScale on
    # one worker); None: ``micro_batches``.
    step_micro_batches: int | None = None

    @property
    def micro_batches_now(self) -> int:
        """The micro-batches of the step being taken (its gradient hooks' k)."""
        return self.step_micro_batches or self.micro_batches

    @property
    def rank(self) -> int:
        return self.backend.rank

    @property
    def is_primary(self) -> bool:
        return self.backend.is_primary

    @property
    def step(self) -> int:
        """Optimizer steps done."""
        return self.progress.step

    def request_stop(self, reason: str) -> None:
        """End the run, saying ``reason``. Any rank may ask (from values only it has, too):
        every rank stops after the same step, agreed at the next log line, evaluation, epoch
        end or preemption poll (about a second; at once in a single process)."""
        self.stop_reason = self.stop_reason or reason


def pick_device(name: str, key: str = "trainer.device") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}={name} but no CUDA device is visible; use cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"{key}={name} but this machine has {torch.cuda.device_count()} CUDA "
                        "devices (cuda:0 ...); use auto or one of those")
    return device


def shared_run_dir(backend: Backend, own: Path) -> Path:
    """Rank 0's run directory, on every rank (Hydra timestamps each rank's own)."""
    shared = Path(backend.broadcast_object(str(own)))
    drop_unused_run_dir(own, shared)
    return shared


def drop_unused_run_dir(own: Path, shared: Path) -> None:
    """Remove this rank's own run directory, when the run uses another one and Hydra's record
    is all it holds; and in a sweep the rank's own sweep folder too (Hydra timestamps it per
    rank as well), once its multirun.yaml is all it holds."""
    if shared != own and own.is_dir() and {p.name for p in own.iterdir()} <= {".hydra"}:
        shutil.rmtree(own, ignore_errors=True)
        sweep = own.parent
        if sweep != shared.parent and {p.name for p in sweep.iterdir()} <= {"multirun.yaml"}:
            shutil.rmtree(sweep, ignore_errors=True)


DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_data(cfg: DictConfig, backend: Backend, dtype: torch.dtype = torch.float32,
               given: InMemoryData | None = None, *, seed: int = 0,
               val_fraction: float | None = None) -> InMemoryData:
    """The configured data (or ``given``, built by the caller), on its device, in ``dtype``,
    with its validation split: the data's own, else ``val_fraction`` (default
    ``cfg.val_fraction``) of the training rows held out by ``seed`` (trainer/data/validation.py;
    ``data.val_source`` says which, in words; ``data.held_out`` whether rows were held out)."""
    data = given if given is not None else backend.first_on_each_node(
        lambda: safe_instantiate(cfg, "data", exclude=_LOADER_KEYS)
    )
    if not isinstance(data, InMemoryData):
        raise UserError(
            f"data._target_ built a {type(data).__name__}, not a trainer data object: for torch "
            "Datasets use _target_: trainer.data.Datasets with train: and test: under it"
        )
    own_val = getattr(data, "val", None)
    for name, split in (("training", data.train), ("validation", own_val), ("test", data.test)):
        if split is not None and len(split) == 0:
            raise UserError(
                f"data: the {name} split of {type(data).__name__} is empty (0 items); check "
                "the data files it reads (data.root) or the Dataset it was given"
            )
    fraction = float(cfg.get("val_fraction", 0.0) if val_fraction is None else val_fraction)
    data.held_out = own_val is None and fraction > 0  # (rows of train: said where it matters)
    if own_val is not None:
        data.val_source = f"the data's own validation split ({len(own_val):,} rows)"
    elif fraction > 0:
        rows = len(data.train)
        data.train, data.val, by_class = hold_out(data.train, fraction, seed)
        data.val_source = (
            f"{len(data.val):,} of the {rows:,} training rows held out (data.val_fraction="
            f"{fraction:g}, {'in each class' if by_class else 'at random'}, trainer.seed "
            f"{seed}); {len(data.train):,} train on")
    else:
        data.val = None
        data.val_source = ("none (data.val_fraction=0): evaluations during training report "
                           "the training loss, and early stopping and best.pt select on it")
    where = backend.device if cfg.device == "auto" else pick_device(cfg.device, "data.device")
    for name, attribute in (("training", "train"), ("validation", "val"), ("test", "test")):
        split = getattr(data, attribute)
        if split is not None:
            split = split.to(where)
            if hasattr(split, "name"):  # a Dataset's: its messages say which split
                split.name = name
            setattr(data, attribute, split)
    # Model input in the run's dtype (trainer.dtype), wherever a batch is made: training,
    # evaluation, sample predictions, QAT's example batch. Integer input (word indices) stays.
    data.transform = functools.partial(in_dtype, data.transform, dtype)
    return data


def in_dtype(transform, dtype: torch.dtype, raw: torch.Tensor) -> torch.Tensor:
    """``transform(raw)``, floating-point in ``dtype`` (integer input stays as it is)."""
    x = transform(raw)
    # Compared first: even a .to() that changes nothing is a dispatch on the hot path.
    return x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x


def build_model(cfg: DictConfig, backend: Backend, dtype: torch.dtype = torch.float32,
                given: torch.nn.Module | None = None, **from_data: Any) -> torch.nn.Module:
    """The configured model (or ``given``, built by the caller: it is trained in place) with
    the transforms that decide its modules (Ghost BN, SyncBN; trainer.engine.transforms), on
    the backend's device in ``dtype``: what a checkpoint's weights load into.
    ``from_data``: sizes only the data knows."""
    model = instantiate_model(cfg, given, **from_data)
    build = BuildContext(cfg=None, backend=backend, device=backend.device, dtype=dtype)
    return apply_transforms(model, structure_transforms(cfg, backend.world_size), build)[0]


def instantiate_model(cfg: DictConfig, given: torch.nn.Module | None = None,
                      **from_data: Any) -> torch.nn.Module:
    """The configured model, or ``given``, untransformed."""
    model = given if given is not None else safe_instantiate(
        cfg, "model", exclude=_MODEL_FRAMEWORK_KEYS, **from_data)
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"model._target_ built a {type(model).__name__}, not a torch.nn.Module")
    return model


def build_run(cfg: DictConfig, run_dir: Path, backend: Backend,
              objects: dict[str, Any] | None = None,
              continuing: tuple[str, dict] | None = None) -> Run:
    """Everything a run needs, built on every rank; ``backend`` is already initialised.

    ``objects``: what the caller built itself (``trainer.fit``): ``model``, ``data``,
    ``callbacks``; the config's own entries for those are not instantiated. ``continuing``:
    (where from, state) when this same run is built again with its state in memory (Horovod
    elastic after workers came or went); the run directory's checkpoints are then its own."""
    check_same_config(cfg, backend)
    checkpointer = Checkpointer(run_dir / "checkpoints", cfg.trainer.keep_last,
                                backend.is_primary)
    # Rank 0 takes the run directory, checks it can be written and reads the resume
    # checkpoint; the others get its state (or its error) by broadcast, so they need no shared
    # filesystem for resuming.
    try:
        if continuing is None:
            resumed = backend.on_primary(lambda: checkpointer.start(cfg.trainer.resume))
        else:
            backend.on_primary(checkpointer.adopt)
            resumed = continuing
        run = _build_components(cfg, run_dir, backend, objects or {}, checkpointer,
                                _stored_val_fraction(resumed))
    except BaseException:
        checkpointer.close()  # a run that never started holds no directory
        raise
    if resumed is not None:
        run.resumed_from, run.resume_state = resumed
    return run


def _stored_val_fraction(resumed: tuple[Any, dict] | None) -> float | None:
    """The validation share a resumed run started with (its checkpoint's config; 0 for one
    from before validation splits, trainer.config.instantiate.upgrade_stored_config)."""
    if resumed is None:
        return None
    data = (resumed[1].get("config") or {}).get("data") or {}
    return float(data.get("val_fraction", 0.0))


def _build_components(cfg: DictConfig, run_dir: Path, backend: Backend,
                      objects: dict[str, Any], checkpointer: Checkpointer,
                      stored_val_fraction: float | None = None) -> Run:
    loop = cfg.trainer
    if loop.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = backend.device
    val_fraction, kept = cfg.data.get("val_fraction", 0.0), ""
    if stored_val_fraction is not None and stored_val_fraction != val_fraction:
        # The training rows are the run's: another share would change them mid-run. (The
        # run's config says the share it uses: config.yaml, the resume's comparison.)
        kept = (f"data.val_fraction={val_fraction:g} is not used: a resumed run keeps the "
                f"validation split it started with ({stored_val_fraction:g})")
        val_fraction = stored_val_fraction
        with open_dict(cfg):
            cfg.data.val_fraction = val_fraction
    logger = Logger(run_dir, cfg, enabled=backend.is_primary)
    if kept:
        logger.warning(kept)
    seed_everything(loop.seed)
    dtype = DTYPES[loop.dtype]
    data = build_data(cfg.data, backend, dtype, objects.get("data"), seed=loop.seed,
                      val_fraction=val_fraction)
    schedule = safe_instantiate(cfg.schedule, "schedule")
    # (More epochs than trainer.epochs where it counts base-batch epochs: AdaScale.)
    # (data.batch_size=auto: from M0, up to epochs x the largest batch / M0 real epochs.)
    first_batch = batch_size.start_batch(cfg)
    epochs = most_epochs(cfg.optimizer, batch_size.largest_batch(cfg), loop.epochs)
    epoch_batches = schedule.global_batches(first_batch, len(data.train), epochs)
    try:
        loader = InMemoryLoader(
            data.train, first_batch, seed=loop.seed, rank=backend.rank,
            world_size=backend.world_size,
            prepare=functools.partial(prepare_batch, transform=data.transform, dtype=dtype),
            augment=data.augmentation,
        )
    except ValueError as exc:
        held = (f" (data.val_fraction={val_fraction:g} held {len(data.val):,} rows out for "
                "validation)" if data.held_out else "")
        key = "data.batch_size_min" if batch_size.is_auto(cfg) else "data.batch_size"
        raise UserError(f"{key}={first_batch}: {exc}{held}; choose another") from None
    noise_scale, micro_batches = plan_noise_scale(loop, backend)
    for global_batch in sorted(set(epoch_batches)):  # schedule=increase_batch grows it
        batch = global_batch // backend.world_size
        if batch % micro_batches:
            why = ("trainer.noise_scale=always (2 micro-batches per step)"
                   if micro_batches != loop.accumulate
                   else f"trainer.accumulate={loop.accumulate}")
            raise UserError(
                f"{why} does not divide the per-worker batch of {batch} "
                f"(data.batch_size={global_batch} over {backend.world_size} workers) into "
                "equal micro-batches; choose another batch size"
            )
        check_ghost_batches(cfg, batch // micro_batches)

    # The model, then its transforms in their one order (trainer.engine.transforms), all
    # from the shared seed: every rank builds the same weights.
    model = instantiate_model(cfg.model, objects.get("model"), **data.model_kwargs())
    transforms = run_transforms(cfg, backend.world_size, objects.get("transforms", ()))
    position = BatchPosition()
    build = BuildContext(cfg=cfg, backend=backend, device=device, dtype=dtype, data=data,
                         logger=logger, batch_position=position)
    model, forward = apply_transforms(model, transforms, build)
    # From here on each rank draws from its own stream (dropout outside the swapped layers,
    # anything random in the model).
    seed_everything(worker_seed(loop.seed, backend.rank))
    train_model = backend.wrap_model(forward)
    first_stage = loop.stages[0] if loop.stages else None
    optimizer = backend.wrap_optimizer(
        build_optimizer(stage_optimizer(cfg.optimizer, first_stage), model, first_batch),
        model,
    )
    for transform in transforms:
        transform.after_optimizer(model, optimizer)
    epoch_steps = [len(data.train) // batch for batch in epoch_batches]
    total_steps = sum(epoch_steps)
    if batch_size.is_auto(cfg):
        # Every AdaScale step's gain is >= 1: at most trainer.epochs of steps at M0.
        total_steps = min(total_steps, sum(epoch_steps[:loop.epochs]))
    if loop.max_steps is not None:
        total_steps = min(total_steps, loop.max_steps)
    # The schedule spans trainer.epochs (AdaScale reads it at its scale-invariant progress).
    schedule.attach(optimizer, steps_per_epoch=epoch_steps[:loop.epochs],
                    total_steps=min(total_steps, sum(epoch_steps[:loop.epochs])))
    task = objects["task"] if "task" in objects else safe_instantiate(cfg.task, "task")
    noise = safe_instantiate(cfg.noise, "noise")
    noise.bind(loop.seed)

    run = Run(
        cfg=cfg, run_dir=run_dir, device=device, backend=backend, data=data, loader=loader,
        model=model, train_model=train_model, task=task, feed=forward_of(task),
        optimizer=optimizer,
        schedule=schedule, precision=Precision(loop.precision, device), logger=logger,
        checkpointer=checkpointer, progress=Progress(), total_steps=total_steps, noise=noise,
        micro_batches=micro_batches, noise_scale=noise_scale, epoch_batches=epoch_batches,
        epoch_steps=epoch_steps, batch_position=position, forward=forward,
        callbacks=build_callbacks(cfg, objects.get("callbacks", ()), noise),
        averaged=[noise_scale] if noise_scale is not None else [],
        cadence=StepCadence(loop.eval_every, loop.checkpoint_every),
    )
    register_state(run)
    return run


def register_state(run: Run) -> None:
    """Every stateful component, once, with the checkpointer (trainer.io.state). Order is load
    order: the progress first (a later stage is re-entered, whose optimizer the saved state
    fits), the RNGs last (nothing may draw after them)."""
    register = run.checkpointer.register
    # Beside them, what rebuilding the model from a checkpoint alone needs (trainer-predict,
    # -export): the config and the data's sizes, the same in every checkpoint of the run.
    config = OmegaConf.to_container(run.cfg, resolve=True, enum_to_str=True)
    run.checkpointer.metadata = {"config": config, "model_kwargs": run.data.model_kwargs()}
    register("progress", ProgressState(run))
    register("model", ModelState(run))
    register("optimizer", OptimizerState(run))
    register("schedule", run.schedule)
    register("precision", run.precision)
    if run.noise_scale is not None:
        register("noise_scale", run.noise_scale)
    register("data", run.data)
    register("callbacks", run.callbacks)
    register("rng", RNGState(run))
