"""Shared helpers: compose the real config, shrink it, run it in-process or as a CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from trainer.config import compose_config as compose
from trainer_recipes.mnist.synthetic import write_fake_mnist

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TRAINER_DATA_DIR", ROOT.parent / "shared" / "data"))

# Small and fast everywhere: no progress bar, one thread per run (CI has 2 cores, and a
# fixed thread count keeps CPU float results reproducible).
SHRINK = ["logger.progress_bar=false", "dist.threads_per_worker=1"]


def compose_config(*overrides: str) -> DictConfig:
    return compose(*SHRINK, *overrides)


def train_in_process(run_dir: Path, *overrides: str) -> dict:
    from trainer.cli import train

    return train(compose_config(*overrides), run_dir)


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300):
    """Run ``python -m trainer ARGS`` and return the CompletedProcess (text mode)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args, *SHRINK],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


make_fake_mnist = write_fake_mnist


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory) -> Path:
    return make_fake_mnist(tmp_path_factory.mktemp("data") / "mnist")


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    folder = SHARED_DATA / "mnist"
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found under {folder} (set TRAINER_DATA_DIR)")
    return folder


# The transfer recipe offline: generated image folder, random backbone, 32x32, decoded inline.
VGG_SMALL = ["data.synthetic=true", "model.pretrained=false", "data.image_size=32",
             "data.workers=0"]


@pytest.fixture
def recipe_data(fake_mnist):
    """Overrides that point a recipe at small local data (none for the offline default)."""
    mnist = [f"data.root={fake_mnist}", "data.download=false"]
    # The small stand-in has 1,200 training images: fewer than one batch of 8192.
    roots = {"mnist": mnist, "mnist_8k": [*mnist, "data.batch_size=256"],
             "asl_cnn": ["data.synthetic=true"], "headlines": ["data.synthetic=true"],
             "vgg16_transfer": [*VGG_SMALL, "data.batch_size=8"]}

    def overrides(recipe: str) -> list[str]:
        return roots.get(recipe, [])

    return overrides


# 64 features with small true weights, so that at w = 0 the gradient noise scale is ~120:
# comparable to the batch sizes used, where the two-batch estimator is well conditioned.
_WEIGHTS = (0.05 * torch.randn(64, generator=torch.Generator().manual_seed(1))).tolist()
# lr ~ 0 keeps the weights (hence the true noise scale) fixed while the estimate settles.
FROZEN = (
    "recipe=linreg", f"data.weights=[{','.join(f'{w:.6f}' for w in _WEIGHTS)}]",
    "data.num_train=32768", "data.batch_size=512", "optimizer.lr=1e-9",
    "trainer.noise_scale_ema=0.99", "trainer.max_steps=300", "trainer.early_stop=null",
    "logger.tensorboard=false",
)


@pytest.fixture(scope="session")
def true_b_simple() -> float:
    """tr(Sigma) / |G|^2 of the per-sample MSE gradients at w = 0, b = 0, over the train set."""
    from trainer.backends.base import Backend
    from trainer.build import build_data

    data = build_data(compose_config(*FROZEN).data, Backend(torch.device("cpu")))
    x, y = data.train.inputs.double(), data.train.targets.double()
    # d/dw (w.x + b - y)^2 at w = b = 0 is -2 y x (and -2 y for b).
    per_sample = -2 * y[:, None] * torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    mean = per_sample.mean(0)
    trace = (per_sample - mean).square().sum(1).mean()
    return float(trace / mean.square().sum())
