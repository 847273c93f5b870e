"""Fixtures shared by the tests; the shared code itself is in tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import FROZEN, SHARED_DATA, VGG_SMALL, compose_config, make_fake_mnist

# One intra-op thread per process, in the pytest workers and in every process a test starts
# (they inherit OMP_NUM_THREADS): the two pytest workers (pyproject's -n 2) share two cores
# with the processes their tests start, and OpenMP threads time-sliced against other busy
# processes wait at every barrier: a 3-epoch MNIST run on 2 threads took 76 s in the suite
# against 7 s alone. (A test of the thread choice itself sets its own environment.)
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# Every Python process a test starts prints all its threads' stacks on SIGABRT (and on a
# crash): tests.helpers.finish sends it to a run that hangs past its timeout.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")


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
    mnist = [f"data.root={fake_mnist}", "data.download=false"]
    # The small stand-in has 1,200 training images: fewer than one batch of 8192.
    roots = {"mnist": mnist, "mnist_8k": [*mnist, "data.batch_size=256"],
             "asl_cnn": ["data.synthetic=true"], "headlines": ["data.synthetic=true"],
             "vgg16_transfer": [*VGG_SMALL, "data.batch_size=8"]}

    def overrides(recipe: str) -> list[str]:
        return roots.get(recipe, [])

    return overrides


@pytest.fixture(scope="session")
def true_b_simple() -> float:
    """tr(Sigma) / |G|^2 of the per-sample MSE gradients at w = 0, b = 0, over the train set."""
    from trainer.engine.build import build_data
    from trainer.parallel.backends.base import Backend

    data = build_data(compose_config(*FROZEN).data, Backend(torch.device("cpu")))
    x, y = data.train.inputs.double(), data.train.targets.double()
    # d/dw (w.x + b - y)^2 at w = b = 0 is -2 y x (and -2 y for b).
    per_sample = -2 * y[:, None] * torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    mean = per_sample.mean(0)
    trace = (per_sample - mean).square().sum(1).mean()
    return float(trace / mean.square().sum())
