"""Pick and build the data-parallel backend named by ``dist.backend``."""

from __future__ import annotations

import torch

from trainer import identity
from trainer.backends.base import Backend
from trainer.errors import UserError

__all__ = ["Backend", "build_backend"]


def build_backend(cfg, device: torch.device) -> Backend:
    """``auto`` follows the launcher's environment; ``none`` forces one process."""
    name = cfg.backend
    if name not in ("auto", "none"):
        raise UserError(
            f"dist.backend={name!r} is not available in this version; use dist.backend=auto "
            "or dist.backend=none"
        )
    env = identity.from_environment()
    if name == "auto" and env.world_size > 1:
        raise UserError(
            f"launched as rank {env.rank} of {env.world_size} by {env.launcher}, but this "
            "version trains in one process only; run without a launcher or set "
            "dist.backend=none on a single process"
        )
    return Backend(device, env if name == "auto" else identity.Identity())
