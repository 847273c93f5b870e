"""The run's callbacks from its config: the framework's own features that run as callbacks
(where other keys ask for them: the loop and the step name none of them), then the config's
``callbacks.NAME`` entries (the ``callbacks`` group's options: the best checkpoint by default,
early stopping, the profiler; trainer/conf/callbacks/), then the instances ``trainer.fit`` was
given."""

from __future__ import annotations

from omegaconf import DictConfig

from trainer.callbacks import Callback, CallbackList
from trainer.callbacks.adaptive_batch import AdaptiveBatch
from trainer.callbacks.adascale import AdaScaleCallback
from trainer.callbacks.noise_scale import NoiseScaleCallback
from trainer.callbacks.qat_phases import QATPhases
from trainer.callbacks.sample_predictions import SamplePredictions
from trainer.callbacks.stage_switch import StageSwitch
from trainer.config.batch_size import is_auto
from trainer.config.instantiate import safe_instantiate
from trainer.errors import UserError
from trainer.optim.clip import GradClip
from trainer.quant.qat import QATSchedule


def framework_callbacks(cfg: DictConfig, noise: Callback | None = None) -> dict[str, Callback]:
    """The framework's own features that run as callbacks, where the config asks for them: the
    loop names none of them. Their order is the order their hooks run in: the stage switch
    first (it changes the trainable parameters the gradient hooks follow), then the gradient
    hooks (measure the gradient, clip it, add noise to the clipped one). ``noise``: the run's
    built ``noise`` object (its additive noise is a gradient hook)."""
    loop = cfg.trainer
    named: dict[str, Callback] = {}
    if loop.stages:
        named["stage_switch"] = StageSwitch()
    if cfg.quant.mode == "qat":
        q = cfg.quant
        named["qat_phases"] = QATPhases(QATSchedule(q.start_step, q.freeze_observer_step,
                                                    q.freeze_bn_step))
    # Always: it also says in metrics.json why B_simple was not measured.
    named["noise_scale"] = NoiseScaleCallback()
    if is_auto(cfg):  # (before AdaScale: it sets the batch AdaScale's gain is for)
        named["adaptive_batch"] = AdaptiveBatch()
    if cfg.optimizer.scale_lr == "adascale":
        named["adascale"] = AdaScaleCallback()
    if loop.clip_grad_norm is not None or loop.clip_grad_value is not None:
        named["clip_grad"] = GradClip(loop.clip_grad_norm, loop.clip_grad_value)
    if noise is not None:
        named["grad_noise"] = noise
    if cfg.logger.sample_predictions:
        named["sample_predictions"] = SamplePredictions()
    return named


def build_callbacks(cfg: DictConfig, given=(), noise: Callback | None = None) -> CallbackList:
    """The framework's callbacks, the config's by name (null entries removed), then ``given``
    (instances from ``trainer.fit``), called in that order."""
    named = framework_callbacks(cfg, noise)
    for name, node in cfg.callbacks.items():
        if node is None:  # callbacks.NAME=null: off, the framework's own included
            named.pop(str(name), None)
            continue
        callback = safe_instantiate(node, f"callbacks.{name}")
        if not isinstance(callback, Callback):
            raise UserError(f"callbacks.{name}: {node._target_} is not a trainer.Callback "
                            "subclass; subclass it and override the hooks you need")
        named[str(name)] = callback
    # trainer.fit's instances by their class's qualified name (a second instance of a class:
    # NAME_2, ...), so that a checkpoint's state finds them whatever else the list holds.
    # Checkpoints written before that keyed them by position: NAME_<index>.
    formerly = {}
    for i, callback in enumerate(given):
        if not isinstance(callback, Callback):
            raise UserError(f"callbacks[{i}] is a {type(callback).__name__}, not a "
                            "trainer.Callback")
        name, count = type(callback).__qualname__, 1
        while (key := name if count == 1 else f"{name}_{count}") in named:
            count += 1
        named[key] = callback
        formerly[key] = f"{type(callback).__name__}_{i}"
    return CallbackList(named, formerly)
