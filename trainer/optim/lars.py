"""LARS and LARC: layer-wise adaptive rate scaling for SGD with momentum.

LARS (You, Gitman, Ginsburg 2017, "Large Batch Training of Convolutional Networks"). For each
parameter tensor w with gradient g, weight decay beta and trust coefficient eta:

    local_lr = eta * ||w|| / (||g|| + beta * ||w||)      (1 when ||w|| or ||g|| is 0)
    g'       = local_lr * (g + beta * w)
    v        = momentum * v + g'                           (PyTorch SGD: lr outside v)
    w        = w - lr * v

LARC (NVIDIA apex's "clip" mode) caps the layer's effective rate at the global one:

    g' = min(local_lr / lr, 1) * (g + beta * w)

Groups with ``adapt=False`` (biases, norm parameters; see ``split_bias_and_norm``) skip the
trust ratio and are plain SGD with momentum.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class LARS(Optimizer):
    """LARS on top of SGD with momentum.

    Args:
        params: parameters or parameter groups (a group may set ``adapt=False``).
        lr: global learning rate (> 0).
        momentum: momentum factor in [0, 1).
        weight_decay: L2 penalty beta (>= 0), also in the trust ratio's denominator.
        trust_coefficient: eta (> 0); You et al. use 0.001.
        eps: added to the trust ratio's denominator for safety (>= 0).
        nesterov: use Nesterov momentum (needs momentum > 0).
    """

    clip = False

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 0.0,
                 nesterov: bool = False) -> None:
        if lr <= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum: {momentum}")
        if weight_decay < 0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        if trust_coefficient <= 0:
            raise ValueError(f"Invalid trust_coefficient: {trust_coefficient}")
        if eps < 0:
            raise ValueError(f"Invalid eps: {eps}")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum requires momentum > 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, eps=eps, nesterov=nesterov,
                        adapt=True)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # state dicts saved before these keys existed
            group.setdefault("nesterov", False)
            group.setdefault("adapt", True)
            group.setdefault("eps", 0.0)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta, mu = group["lr"], group["weight_decay"], group["momentum"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = w.grad
                update = g.add(w, alpha=beta) if beta else g.clone()
                if group["adapt"]:
                    w_norm, g_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(g)
                    local_lr = group["trust_coefficient"] * w_norm / (
                        g_norm + beta * w_norm + group["eps"]
                    )
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), local_lr,
                                        torch.ones_like(local_lr))
                    if self.clip:
                        ratio = torch.clamp(ratio / lr, max=1.0)
                    update.mul_(ratio)
                if mu:
                    state = self.state[w]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = update.clone()
                    else:
                        state["momentum_buffer"].mul_(mu).add_(update)
                    buf = state["momentum_buffer"]
                    update = update.add(buf, alpha=mu) if group["nesterov"] else buf
                w.add_(update, alpha=-lr)
        return loss


class LARC(LARS):
    """LARS with clipping: the layer's factor is min(local_lr / lr, 1) (same Args as LARS)."""

    clip = True
