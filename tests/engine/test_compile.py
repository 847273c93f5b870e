"""trainer.compile=true: torch.compile of the bare model (inductor's C++ backend on the CPU),
wrapped by DDP or used under Horovod, with checkpoints that hold the plain model's keys.
Each compiled run spends ~20 s compiling on 2 cores: slow-marked."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    EQUIVALENCE,
    EXACT,
    ROOT,
    SHRINK,
    max_difference,
    run,
    run_cli,
    train_in_process,
    weights,
)
from tests.helpers.errors import one_line_error

COMPILE = "trainer.compile=true"


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plain")
    run("none", 1, *EQUIVALENCE, f"hydra.run.dir={folder}/run", cwd=folder)
    return weights(folder / "run")


@pytest.mark.slow
def test_a_compiled_run_compiles_and_equals_the_uncompiled_one(tmp_path, one_worker):
    from torch._dynamo.utils import counters

    counters.clear()
    train_in_process(tmp_path / "r", *EQUIVALENCE, COMPILE)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured the model's forward
    compiled = weights(tmp_path / "r")
    assert not any("_orig_mod" in k for k in compiled)  # the plain model's keys
    assert max_difference(one_worker, compiled) < EXACT


@pytest.mark.slow
def test_compiled_model_under_ddp(tmp_path, one_worker):
    run("torchrun", 2, *EQUIVALENCE, COMPILE, f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert max_difference(one_worker, weights(tmp_path / "r")) < EXACT


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("horovod") is None, reason="Horovod not installed")
def test_compiled_model_under_horovod(tmp_path, one_worker):
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        ["bash", str(ROOT / "launch" / "horovodrun.sh"), "2", *EQUIVALENCE, COMPILE, *SHRINK,
         f"hydra.run.dir={tmp_path}/r"], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": sys.executable},
        timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert max_difference(one_worker, weights(tmp_path / "r")) < EXACT


@pytest.mark.slow
def test_checkpoints_cross_between_compiled_and_plain_runs(tmp_path, one_worker):
    half = (*EQUIVALENCE, "trainer.max_steps=25")
    run("none", 1, *half, f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)  # plain 0 -> 25
    run("none", 1, *EQUIVALENCE, COMPILE, f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)  # -> 50
    assert max_difference(one_worker, weights(tmp_path / "r")) < EXACT
    saved = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["progress"]["step"] == 50


def test_compile_with_qat_is_one_line(tmp_path):
    one_line_error(run_cli(COMPILE, "quant=qat", cwd=tmp_path), "trainer.compile", "quant=qat")
