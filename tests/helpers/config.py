"""The project's paths and the real config, composed and shrunk for tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import DictConfig

from trainer.config import compose_config as compose

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("TRAINER_DATA_DIR", ROOT.parent / "shared" / "data"))

# Small and fast everywhere: no progress bar, one thread per run (CI has 2 cores, and a
# fixed thread count keeps CPU float results reproducible).
SHRINK = ["logger.progress_bar=false", "dist.threads_per_worker=1"]


def compose_config(*overrides: str) -> DictConfig:
    return compose(*SHRINK, *overrides)


# The transfer recipe offline: generated image folder, random backbone, 32x32, decoded inline.
VGG_SMALL = ["data.synthetic=true", "model.pretrained=false", "data.image_size=32",
             "data.workers=0"]


# 64 features with small true weights, so that at w = 0 the gradient noise scale is ~120:
# comparable to the batch sizes used, where the two-batch estimator is well conditioned.
_WEIGHTS = (0.05 * torch.randn(64, generator=torch.Generator().manual_seed(1))).tolist()
# lr ~ 0 keeps the weights (hence the true noise scale) fixed while the estimate settles.
FROZEN = (
    "recipe=linreg", f"data.weights=[{','.join(f'{w:.6f}' for w in _WEIGHTS)}]",
    "data.num_train=32768", "data.batch_size=512", "optimizer.lr=1e-9",
    "trainer.noise_scale_ema=0.99", "trainer.max_steps=300", "++callbacks.early_stopping=null",
    "logger.tensorboard=false",
)
