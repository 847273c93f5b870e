"""Global batch semantics: accumulation, linear LR scaling and mixed precision."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import EXACT, FLOAT64, max_difference, run, run_cli, train_in_process, weights

# Dropout on: per-sample masks follow a sample into whichever micro-batch holds it.
ARGS = ("data.batch_size=96", "trainer.max_steps=30", "logger.sample_predictions=0",
        "model.dropout=0.2", FLOAT64)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plain")
    train_in_process(folder, *ARGS)
    return weights(folder)


@pytest.mark.parametrize("k", [2, 4])
def test_accumulating_micro_batches_matches_the_whole_batch(tmp_path, plain, k):
    metrics = train_in_process(tmp_path, *ARGS, f"trainer.accumulate={k}")
    assert metrics["steps"] == 30 and metrics["global_batch_size"] == 96
    assert max_difference(plain, weights(tmp_path)) < EXACT


def test_two_workers_accumulating_match_one_worker(tmp_path, plain):
    run("torchrun", 2, *ARGS, "trainer.accumulate=3", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert max_difference(plain, weights(tmp_path / "r")) < EXACT


def test_accumulate_must_divide_the_worker_batch(tmp_path):
    result = run_cli(*ARGS, "trainer.accumulate=5", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert result.returncode == 2
    assert "trainer.accumulate=5 does not divide the per-worker batch of 96" in result.stderr


def test_linear_scaling_rule_sets_the_lr_from_the_global_batch(tmp_path):
    train_in_process(tmp_path, "data.batch_size=512", "optimizer.lr=0.1", "trainer.max_steps=2",
                     "optimizer.scale_lr=linear", "optimizer.base_batch_size=256",
                     "trainer.log_every=1")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert events.Scalars("train/lr")[0].value == pytest.approx(0.2)


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    metrics = train_in_process(tmp_path, "trainer.precision=bf16", "trainer.epochs=3")
    assert metrics["test_accuracy"] > 0.6
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["model"]["1.weight"].dtype == torch.float32  # master weights stay fp32


def test_fp16_without_a_gpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_cli("trainer.precision=16", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert result.returncode == 2
    assert "trainer.precision=16 needs a CUDA device" in result.stderr
    assert "bf16" in result.stderr


def test_metrics_report_the_global_batch(tmp_path):
    train_in_process(tmp_path, "data.batch_size=64", "trainer.accumulate=4", "trainer.max_steps=3")
    assert json.loads((tmp_path / "metrics.json").read_text())["global_batch_size"] == 64
