"""LAMB: layer-wise adaptive moments (You et al. 2019, "Large Batch Optimization for Deep
Learning: Training BERT in 76 minutes").

For each parameter tensor w with gradient g at step t:

    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g^2
    m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)     (bias correction)
    u = m_hat / (sqrt(v_hat) + eps) + lambda * w               (decoupled weight decay)
    r = ||w|| / ||u||                                          (1 when either norm is 0)
    w = w - lr * r * u

Groups with ``adapt=False`` (biases, norm parameters) use r = 1, i.e. AdamW's update.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class LAMB(Optimizer):
    """LAMB.

    Args:
        params: parameters or parameter groups (a group may set ``adapt=False``).
        lr: learning rate (> 0).
        betas: coefficients of the first and second moment averages, each in [0, 1).
        eps: added to sqrt(v_hat) (> 0); the paper's default 1e-6.
        weight_decay: decoupled weight decay lambda (>= 0).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        if lr <= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}")
        if eps <= 0:
            raise ValueError(f"Invalid eps: {eps}")
        if weight_decay < 0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        adapt=True)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # state dicts saved before this key existed
            group.setdefault("adapt", True)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = w.grad
                state = self.state[w]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(w)
                    state["exp_avg_sq"] = torch.zeros_like(w)
                state["step"] += 1
                t = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = m / (1 - beta1**t)
                v_hat = v / (1 - beta2**t)
                u = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    u.add_(w, alpha=group["weight_decay"])
                if group["adapt"]:
                    w_norm, u_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(u)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm,
                                        torch.ones_like(w_norm))
                    w.sub_(u * ratio, alpha=group["lr"])
                else:
                    w.sub_(u, alpha=group["lr"])
        return loss
