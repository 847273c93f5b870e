"""Typed schemas for the framework's config groups.

Hydra merges each YAML option onto these dataclasses, so a misspelt key or a wrong type in the
framework's own groups fails at start with OmegaConf naming the full key (``Key 'epochz' not in
'LoopConfig'``). These dataclasses are the ONE place the closed groups' defaults live (their YAML
options hold only comments or a mode). Built-in optimizer, schedule and noise options pull a
schema generated from their class's signature (``schema/<group>/<option>`` in their defaults
list; trainer.config.from_signature), so their defaults live in the class. Model and data
options (the recipes', and a user's) need none: their keys are checked against the
``_target_``'s signature instead.

A key with a closed set of values has an enum type here (OmegaConf refuses any other value
by name, in one line: trainer.tools.hydra_errors); a key with a range says it beside its
default (:func:`rule`, checked by trainer.config.validate.check_rules). What spans several
keys is checked once, in trainer.config.validate.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any, Dict  # noqa: UP035

from omegaconf import MISSING


class Choice(str, enum.Enum):
    """A key's accepted values. A member is its plain string everywhere the code looks
    (``==``, f-strings, JSON); OmegaConf checks a value against the members' names."""

    __str__ = str.__str__
    __format__ = str.__format__


def choices(name: str, *values: str) -> type[Choice]:
    """A :class:`Choice` whose members are ``values`` (each named as its value)."""
    return Choice(name, [(value, value) for value in values], module=__name__)


Dtype = choices("Dtype", "float32", "float64")
DropoutMasks = choices("DropoutMasks", "per_sample", "per_rank")
NoiseScaleWhen = choices("NoiseScaleWhen", "auto", "always", "never")
BackendName = choices("BackendName", "auto", "torch", "horovod", "none")
Compression = choices("Compression", "none", "fp16", "bf16")
ReduceOp = choices("ReduceOp", "average", "adasum")
QuantMode = choices("QuantMode", "none", "qat", "ptq")


def rule(default: Any, *, low: float | None = None, above: float | None = None,
         below: float | None = None, whole: bool = False, boolean: bool = False,
         choices: tuple[str, ...] = (), pattern: str = "", optional: bool = False,
         also: tuple[str, ...] = (), hint: str) -> Any:
    """A field with what it allows beside its default: ``low <= v``, ``above < v``,
    ``v < below``; ``whole``: an integer, ``boolean``: true or false (for the open groups,
    which OmegaConf does not type: ``model.sync_bn=off`` would be the string 'off', truthy);
    ``choices``: one of these strings (an open group's); ``pattern``: a string matching this
    regular expression; ``optional``: null is allowed too; ``also``: these strings are
    allowed besides what the other checks allow (``auto``); ``hint``: what to use, for the
    one-line error (``trainer.epochs=0 is invalid: use at least 1``)."""
    checks = {"low": low, "above": above, "below": below, "whole": whole or None,
              "boolean": boolean or None,
              "choices": choices or None, "pattern": pattern or None, "also": also or None}
    return field(default=default, metadata={
        "rule": {**{k: v for k, v in checks.items() if v is not None}, "optional": optional,
                 "hint": hint}})


# Keys that moved out of their group, and what sets them now: a config (or an old recipe)
# that still names one is told in one line (trainer.tools.hydra_errors).
MOVED = {
    "trainer.early_stop": "callbacks=[default,early_stopping] "
                          "callbacks.early_stopping.patience=N",
    "trainer.early_stop_metric": "callbacks.best_checkpoint.monitor=NAME (early stopping "
                                 "watches the same metric)",
    "trainer.early_stop_mode": "callbacks.best_checkpoint.mode=max|min",
    "trainer.early_stop_min_delta": "callbacks.early_stopping.min_delta=X",
    "trainer.profile": "callbacks=[default,profiler]",
    "trainer.profile_wait": "callbacks.profiler.wait=N",
    "trainer.profile_warmup": "callbacks.profiler.warmup=N",
    "trainer.profile_active": "callbacks.profiler.active=N",
    "trainer.profile_all_ranks": "callbacks.profiler.all_ranks=true",
}


def moved(key: str) -> str | None:
    """The one line for a key that moved out of its group (:data:`MOVED`), or None."""
    if key not in MOVED:
        return None
    return (f"{key} moved out of the {key.split('.')[0]} group: use {MOVED[key]} "
            "(docs/configuration.md, Callbacks)")


@dataclass
class ModelKeys:
    """The keys the framework itself reads from ANY model option, and applies to whatever model
    was built; every other key of the option is an argument of its ``_target_``."""

    # BatchNorm over the global batch in data-parallel runs (model.sync_bn).
    sync_bn: bool = rule(False, boolean=True, hint="use true or false")
    # Ghost BatchNorm: normalise each slice of this many samples on its own (null: off).
    ghost_batch_size: int | None = rule(
        None, low=2, whole=True, optional=True,
        hint="use a number of samples >= 2 per ghost batch, or null for off")


@dataclass
class DataKeys:
    """The keys the framework reads from ANY data option (the loader's). ``batch_size`` is the
    GLOBAL batch over all workers."""

    # auto: the goodput controller picks it during training, from batch_size_min up to
    # batch_size_max (trainer/callbacks/adaptive_batch.py; docs/large_batch.md).
    batch_size: Any = rule(128, low=1, whole=True, also=("auto",),
                           hint="use a positive integer, or auto")
    # With batch_size=auto: M0, the batch it starts from and never goes below, also AdaScale's
    # base (null: optimizer.base_batch_size); the largest it may choose (null: 32 x M0).
    batch_size_min: int | None = rule(None, low=1, whole=True, optional=True,
                                      hint="use a positive integer, or null")
    batch_size_max: int | None = rule(None, low=1, whole=True, optional=True,
                                      hint="use a positive integer, or null")
    # With batch_size=auto: the most samples one worker's forward/backward takes at once; a
    # larger per-worker batch is accumulated over several micro-batches (null: no limit).
    max_micro_batch: int | None = rule(None, low=1, whole=True, optional=True,
                                       hint="use a positive integer, or null")
    # A batch_plan.json to replay instead of deciding (batch_size=auto): the same batches at
    # the same samples, no timing, on any number of workers.
    batch_plan: str | None = rule(None, optional=True, pattern=r".+",
                                  hint="use the path of a batch_plan.json, or null")
    eval_batch_size: int = rule(1000, low=1, whole=True, hint="use a positive integer")
    # Where the data tensors live: "auto" keeps them on the training device (in-memory path).
    device: str = rule("auto", pattern=r"auto|cpu|cuda(:\d+)?", hint="use auto, cpu or cuda[:N]")
    # The share of the training rows held out as the validation split, where the data has no
    # validation split of its own (trainer/data/validation.py); 0: none (selection then on
    # the training loss).
    val_fraction: float = rule(0.1, low=0, below=1,
                               hint="use a share from 0 (no validation split) to below 1")


@dataclass
class OptimizerKeys:
    """The keys the framework reads from ANY optimizer option (it passes ``lr`` itself,
    scaled); every other key is an argument of the option's ``_target_``."""

    _partial_: bool = True
    # With S = global batch / base_batch_size: linear: lr x S (Goyal et al. 2017); sqrt:
    # lr x sqrt(S); adascale: lr x each step's measured gain in [1, S], the schedule and
    # trainer.epochs in base-batch (scale-invariant) units (Johnson et al. 2020); none: lr.
    scale_lr: str = rule("none", choices=("none", "linear", "sqrt", "adascale"),
                         hint="use none, linear, sqrt or adascale")
    base_batch_size: int = rule(256, low=1, hint="use a positive integer")
    # AdaScale's averaging of its statistics per step (null: max(1 - S/1000, 0.9)).
    adascale_decay: float | None = rule(None, low=0, below=1, optional=True,
                                        hint="use a number in [0, 1), or null")
    # One worker, one micro-batch: AdaScale splits every n-th step in two to measure the noise.
    adascale_measure_every: int = rule(4, low=1, hint="use a positive integer (1: every step)")
    # Biases and norm parameters in their own group: no weight decay, no layer-wise adaptation.
    exclude_bias_and_norm: bool = rule(False, boolean=True, hint="use true or false")


# Per group, the keys the framework consumes (never passed to the option's constructor).
FRAMEWORK_KEYS: dict[str, type] = {"model": ModelKeys, "data": DataKeys,
                                   "optimizer": OptimizerKeys}


def framework_keys(group: str) -> tuple[str, ...]:
    """Keys of ``group`` the framework consumes: its ``*Keys`` fields, and for the optimizer
    ``lr`` (passed scaled) and ``fused`` (LAMB's switch to apex). Hydra's own keys
    (``_partial_``) are not among them: instantiate reads those."""
    cls = FRAMEWORK_KEYS.get(group)
    own = tuple(f.name for f in fields(cls) if not f.name.startswith("_")) if cls else ()
    return (*own, "lr", "fused") if group == "optimizer" else own


def _defaults(cls: type):
    """A ``default_factory`` giving ``cls``'s fields as a plain dict: an OPEN group node that
    starts with the framework's keys and takes any option's own keys on top."""
    return field(default_factory=lambda: {f.name: f.default for f in fields(cls)})


@dataclass
class StageConfig:
    """One stage of a staged run (``trainer.stages``): transfer learning's frozen-backbone
    stage, then fine-tuning. Stages follow each other at epoch boundaries."""

    name: str = MISSING
    epochs: int = MISSING
    # Submodules (dotted names, e.g. backbone) whose parameters do not train in this stage;
    # they are also kept in eval mode (BatchNorm uses its running statistics, no dropout).
    freeze: list[str] = field(default_factory=list)
    # Keys replacing the run's optimizer for this stage (a fresh optimizer, new state); a
    # different _target_ starts from that class's defaults. null: the run's optimizer.
    optimizer: dict[str, Any] | None = None


@dataclass
class LoopConfig:
    """The run loop (the ``trainer`` group)."""

    epochs: int = rule(1, low=1, hint="use at least 1")
    # Stop after this many optimizer steps even mid-epoch (null: run all epochs).
    max_steps: int | None = rule(None, low=1, optional=True,
                                 hint="use a positive integer or null")
    seed: int = rule(0, low=0, below=2**32,
                     hint="use an integer from 0 to 2**32-1 (NumPy's seed range)")
    # Evaluate (on the validation split) every N steps; 0: at the end of each epoch only.
    eval_every: int = rule(0, low=0, hint="use 0 (epoch ends) or a step count")
    # Evaluate the test split once, at the end, on the final model and on best.pt's.
    test: bool = True
    # Checkpoint every N steps (0: only at epoch ends); always at each epoch end.
    checkpoint_every: int = rule(0, low=0, hint="use 0 (epoch ends) or a step count")
    # Also checkpoint when this many minutes passed since the last checkpoint (the primary
    # rank's clock, agreed by every rank at one step), so that long steps or long epochs never
    # lose more than that to a preemption; null: off.
    checkpoint_every_minutes: float | None = rule(
        None, above=0, optional=True, hint="use a positive number of minutes, or null for off")
    keep_last: int = rule(3, low=1, hint="keep at least 1")
    # auto: newest good checkpoint in the run directory; a path: that file or run directory;
    # null: start fresh.
    resume: str | None = "auto"
    log_every: int = rule(50, low=1, hint="use at least 1")
    # auto: CUDA when available, else the CPU; or cpu, cuda, cuda:N.
    device: str = rule("auto", pattern=r"auto|cpu|cuda(:\d+)?", hint="use auto, cpu or cuda[:N]")
    # The share of the training rows held out as the validation split, where the data has no
    # validation split of its own (trainer/data/validation.py); 0: none (selection then on
    # the training loss).
    val_fraction: float = rule(0.1, low=0, below=1,
                               hint="use a share from 0 (no validation split) to below 1")
    # Micro-batches per optimizer step; data.batch_size stays the batch of one step.
    accumulate: int = rule(1, low=1, hint="use 1 or more")
    # Gradient clipping of the averaged gradient, once per step (null: off): the global L2
    # norm at most clip_grad_norm; each element within +-clip_grad_value (applied first).
    clip_grad_norm: float | None = rule(None, above=0, optional=True,
                                        hint="use a positive number, or null for no clipping")
    clip_grad_value: float | None = rule(None, above=0, optional=True,
                                         hint="use a positive number, or null for no clipping")
    # 32 | bf16 | 16 (16: fp16 with a loss scaler, CUDA only).
    precision: str = "32"
    # torch.use_deterministic_algorithms; on the CPU runs are bit-reproducible either way.
    deterministic: bool = False
    # torch.compile the model (inductor; on the CPU it needs a C++ compiler). The first steps
    # take the compilation time.
    compile: bool = False
    # Parameters, buffers, optimizer state, model input and the gradient all-reduce in this
    # dtype. float64 is for checking numerics: N workers then match one worker to ~1e-12 on
    # any CPU, where float32 sums round differently per batch split.
    dtype: Dtype = Dtype.float32
    # per_sample: each sample's dropout mask is drawn from (seed, step, its global index), so
    # N workers reproduce one worker with dropout on; per_rank: each worker draws its own.
    dropout_masks: DropoutMasks = DropoutMasks.per_sample
    # Gradient noise scale B_simple (McCandlish et al. 2018): auto measures it where it is
    # free (trainer.accumulate >= 2); always also measures it with one backward per step
    # (several torch.distributed workers: each worker's own gradient; one process: the step
    # split into 2 micro-batches); never: off.
    noise_scale: NoiseScaleWhen = NoiseScaleWhen.auto
    # Decay of its two exponential moving averages, per step.
    noise_scale_ema: float = rule(0.95, low=0, below=1, hint="use a decay in [0, 1)")
    # Stages run in order (empty: one stage, everything trains). With stages, trainer.epochs
    # must equal their sum: recipes set it to ${sum_epochs:${trainer.stages}}.
    stages: list[StageConfig] = field(default_factory=list)


@dataclass
class DistConfig:
    # auto: decide from the launcher's environment; torch | horovod | none force one.
    backend: BackendName = BackendName.auto
    # Seconds any collective may wait before the job fails (a dead worker, a hung node).
    timeout: int = rule(600, above=0, hint="use seconds > 0")
    # Intra-op threads per worker process (null: torch's default, 1 under MPI launchers).
    threads_per_worker: int | None = rule(None, low=1, optional=True,
                                          hint="use a positive integer or null")
    # DistributedDataParallel knobs (torch backend).
    bucket_cap_mb: float = 25.0
    gradient_as_bucket_view: bool = True
    static_graph: bool = False
    # Parameters that may take no part in a step's loss (a branch the forward skips): DDP
    # then searches the autograd graph after every forward to mark them ready (slower).
    find_unused_parameters: bool = False
    # Re-broadcast rank 0's buffers (BatchNorm statistics) before every forward.
    sync_buffers: bool = True
    # Gradients on the wire (torch: none | fp16 | bf16; Horovod: none | fp16); Horovod's
    # reduction op (average | adasum).
    compression: Compression = Compression.none
    op: ReduceOp = ReduceOp.average
    # Horovod elastic (horovodrun --min-np/--max-np/--host-discovery-script): the run goes on
    # when workers are added or removed, at the same global batch (docs/launching.md).
    elastic: bool = False


@dataclass
class LoggerConfig:
    # false leaves out the log output named tensorboard (logger.outputs.tensorboard=null).
    tensorboard: bool = True
    progress_bar: bool = True
    # How many test samples to draw with their predictions in TensorBoard (0: none).
    sample_predictions: int = rule(16, low=0, hint="use 0 or more")
    # name -> a trainer.LogOutput's config (trainer.io.outputs); null removes one. Every output
    # gets the same scalars, texts, images, hyper-parameters and final metrics.
    outputs: Dict[str, Any] = field(default_factory=lambda: {  # noqa: UP006
        "tensorboard": {"_target_": "trainer.io.outputs.TensorBoardOutput"}})


@dataclass
class QuantConfig:
    """Quantization (the ``quant`` group): none, qat (train with fake quantization, end in an
    int8 model) or ptq (train in float, quantize after training with calibration)."""

    mode: QuantMode = QuantMode.none
    # At the end of a qat/ptq run, write the int8 model and the report (trainer-export can
    # do it later from any checkpoint).
    export: bool = True
    # QAT schedule, in optimizer steps: fake quantization from start_step (float before it);
    # observers frozen from freeze_observer_step, BatchNorm statistics from freeze_bn_step
    # (null: never).
    start_step: int = 0
    freeze_observer_step: int | None = None
    freeze_bn_step: int | None = None
    # PTQ: training batches (of latency_batch_size samples) that calibrate activation ranges.
    calibration_batches: int = rule(8, low=1, hint="use 1 or more")
    # The report's CPU latency: median of latency_repeats runs over one batch of this size.
    latency_batch_size: int = rule(256, low=1, hint="use 1 or more")
    latency_repeats: int = rule(20, low=1, hint="use 1 or more")
    eval_batch_size: int = rule(1000, low=1, hint="use 1 or more")


@dataclass
class TrainConfig:
    """The composed config. Group defaults live in ``trainer/conf/train.yaml``.

    The groups that name a class (model, data, optimizer, schedule, task, noise) are open
    nodes: an option brings its own keys, checked against its ``_target_``'s signature at start
    (trainer.config.instantiate.check_arguments), so a user's option needs no schema. The
    built-in optimizer, schedule and noise options add a typed schema generated from their
    class's signature through their defaults list (trainer.config.from_signature).
    The other groups are closed: a key they do not define is refused.
    """

    model: Dict[str, Any] = _defaults(ModelKeys)  # noqa: UP006 (OmegaConf wants typing's)
    data: Dict[str, Any] = _defaults(DataKeys)  # noqa: UP006
    optimizer: Dict[str, Any] = _defaults(OptimizerKeys)  # noqa: UP006
    schedule: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    task: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    noise: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    trainer: LoopConfig = field(default_factory=LoopConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    # name -> a trainer.Callback's config (_target_ and its arguments); null removes one.
    callbacks: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    # name -> a trainer.ModelTransform's config, applied to the model before training in the
    # order trainer.engine.transforms gives; null removes one (the built-ins' names included).
    transforms: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    # A one-line description the run prints first; recipes say honestly what they train on.
    description: str = ""
