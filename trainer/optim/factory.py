"""The configured optimizer over a model's trainable parameters: the option's class with its
own keys, the learning rate scaled by the framework (``optimizer.scale_lr``), biases and norm
parameters in their own group on request, apex's FusedLAMB where asked."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig

from trainer.config.instantiate import refused_arguments, safe_instantiate
from trainer.config.schema import framework_keys
from trainer.errors import UserError
from trainer.optim.groups import split_bias_and_norm

# Keys of the optimizer group that the framework applies itself (lr is passed scaled).
_OPTIMIZER_ONLY_KEYS = framework_keys("optimizer")


def scaled_lr(cfg: DictConfig, global_batch: int) -> float:
    """``optimizer.lr``, times S = global batch / base batch under the linear scaling rule
    (Goyal et al. 2017), times sqrt(S) under the square-root rule (Krizhevsky 2014; Hoffer
    et al. 2017: the update's noise stays that of the base batch). AdaScale starts from
    ``optimizer.lr`` and multiplies it by each step's gain (trainer/callbacks/adascale.py)."""
    scale = global_batch / cfg.base_batch_size
    if cfg.scale_lr == "linear":
        return cfg.lr * scale
    if cfg.scale_lr == "sqrt":
        return cfg.lr * math.sqrt(scale)
    return cfg.lr


def most_epochs(cfg: DictConfig, global_batch: int, epochs: int) -> int:
    """The real epochs a run of ``trainer.epochs`` may take. With AdaScale, trainer.epochs
    counts base-batch (scale-invariant) epochs, and one of those takes between 1 (every gain
    S) and S (every gain 1) real epochs: the run ends when its progress gets there."""
    if cfg.scale_lr != "adascale":
        return epochs
    return math.ceil(epochs * max(global_batch / cfg.base_batch_size, 1.0))


def fused_lamb(cfg: DictConfig, device: torch.device):
    """apex's FusedLAMB with this config's hyper-parameters (optimizer.fused=true)."""
    try:
        from apex.optimizers import FusedLAMB
    except ImportError:
        FusedLAMB = None  # noqa: N806
    if FusedLAMB is None or device.type != "cuda":
        raise UserError(
            "optimizer.fused=true needs NVIDIA apex (built from source; it has no wheels) and a "
            f"CUDA device (apex {'found' if FusedLAMB else 'not installed'}, device {device}); "
            "use optimizer.fused=false, the same LAMB rule in PyTorch"
        )
    # max_grad_norm=0: no global gradient clipping, which our LAMB does not do either;
    # use_nvlamb=False: no trust ratio where weight decay is 0 (our excluded groups).
    return lambda params, lr: FusedLAMB(params, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                        weight_decay=cfg.weight_decay, max_grad_norm=0.0)


def build_optimizer(
    cfg: DictConfig, model: torch.nn.Module, global_batch: int
) -> torch.optim.Optimizer:
    if not any(p.requires_grad for p in model.parameters()):
        has = "has no parameters" if next(model.parameters(), None) is None else \
            "has every parameter frozen (requires_grad=False)"
        raise UserError(f"the model ({type(model).__name__}) {has}: nothing can train; leave "
                        "some parameters trainable (a stage's freeze: list, your own "
                        "requires_grad_(False) calls)")
    if cfg.get("fused"):
        factory = fused_lamb(cfg, next(model.parameters()).device)
    else:
        factory = safe_instantiate(cfg, "optimizer", exclude=_OPTIMIZER_ONLY_KEYS)
    params = (split_bias_and_norm(model) if cfg.exclude_bias_and_norm
              else [p for p in model.parameters() if p.requires_grad])
    try:
        return factory(params, lr=scaled_lr(cfg, global_batch))
    except ValueError as exc:  # torch's optimizers check their arguments with ValueError
        raise refused_arguments(exc, "optimizer", cfg.get("_target_", "the optimizer")) from None
