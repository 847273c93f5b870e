"""Shared helpers: compose the real config, shrink it, run it in-process or as a CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig

from recipes.mnist.synthetic import write_fake_mnist
from trainer.config import compose_config as compose

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


@pytest.fixture
def recipe_data(fake_mnist):
    """Overrides that point a recipe at small local data (none for the offline default)."""
    roots = {"mnist": [f"data.root={fake_mnist}", "data.download=false"]}

    def overrides(recipe: str) -> list[str]:
        return roots.get(recipe, [])

    return overrides
