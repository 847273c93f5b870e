"""trainer.dtype=float64: every floating tensor of the run in float64, for checking numerics."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tests.helpers import compose_config, train_in_process
from trainer.engine.build import build_run
from trainer.engine.loop import fit
from trainer.errors import UserError
from trainer.parallel.backends.base import Backend


def test_parameters_buffers_optimizer_state_and_inputs_are_float64(tmp_path):
    cfg = compose_config("trainer.dtype=float64", "model.norm=batch", "model.dropout=0.2",
                         "trainer.max_steps=3", "logger.tensorboard=false")
    run = build_run(cfg, tmp_path, Backend(torch.device("cpu")))
    fit(run)
    floating = [t for t in [*run.model.parameters(), *run.model.buffers()]
                if t.is_floating_point()]
    assert floating and all(t.dtype == torch.float64 for t in floating)
    momentum = [s["momentum_buffer"] for s in run.optimizer.state.values()]
    assert momentum and all(m.dtype == torch.float64 for m in momentum)
    inputs, _ = next(run.loader.epoch(0))
    assert inputs.dtype == torch.float64
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert saved["model"]["1.weight"].dtype == torch.float64


def test_word_indices_stay_integers_in_a_float64_run(tmp_path):
    metrics = train_in_process(tmp_path, "recipe=headlines", "data.synthetic=true",
                               "trainer.dtype=float64", "trainer.max_steps=3",
                               "logger.sample_predictions=0")
    assert metrics["steps"] == 3 and metrics["test_loss"] > 0
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert saved["model"]["embedding.weight"].dtype == torch.float64


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
def test_qat_in_float64_is_refused_before_training(tmp_path):
    with pytest.raises(UserError, match=r"trainer.dtype=float64.*float32 only"):
        train_in_process(tmp_path, "quant=qat", "trainer.dtype=float64")
