"""Quantization: QAT through torchao PT2E, int8 export, the report, PTQ, resume, workers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import run, train_in_process
from trainer.errors import UserError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchao") is None,
                                reason="torchao is not installed (pip install -e '.[qat]')")

REPORT = ("fp32_accuracy", "int8_accuracy", "fp32_size_bytes", "int8_size_bytes",
          "fp32_latency_ms", "int8_latency_ms", "agreement")
FAST_REPORT = ("quant.latency_repeats=3", "quant.latency_batch_size=64",
               "logger.sample_predictions=0")
# ASL CNN (conv + BatchNorm) on generated CSVs: 960 images, batch 64 = 15 steps per epoch.
ASL = ("recipe=asl_cnn", "data.synthetic=true", "data.batch_size=64", "quant=qat",
       "quant.start_step=3", "quant.freeze_observer_step=8", "quant.freeze_bn_step=10",
       *FAST_REPORT)


def _report(run_dir: Path) -> dict:
    report = json.loads((run_dir / "quant_report.json").read_text())
    assert all(isinstance(report[k], int | float) and report[k] >= 0 for k in REPORT)
    assert (run_dir / "quant_report.md").read_text().startswith("# Quantization report")
    return report


def _int8_runs(run_dir: Path, example: torch.Tensor) -> torch.Tensor:
    """The saved int8 program loads in a fresh process's way and runs on a new batch size."""
    module = torch.export.load(run_dir / "model_int8.pt2").module()
    weights = [v for v in module.state_dict().values() if v.dtype == torch.int8]
    assert weights, "no int8 weights in the exported program"
    return module(example)


def test_qat_on_the_mnist_mlp_ends_in_a_smaller_int8_model_that_agrees(tmp_path, fake_mnist):
    metrics = train_in_process(
        tmp_path, "recipe=mnist", f"data.root={fake_mnist}", "data.download=false",
        "quant=qat", "quant.start_step=5", "trainer.epochs=2", *FAST_REPORT,
    )
    report = _report(tmp_path)
    assert metrics["quant"] == report and report["mode"] == "qat"
    assert report["agreement"] >= 0.95
    assert report["int8_size_bytes"] <= 0.30 * report["fp32_size_bytes"]
    assert abs(report["int8_accuracy"] - report["fake_quant_accuracy"]) <= 0.05
    out = _int8_runs(tmp_path, torch.rand(5, 28, 28))
    assert out.shape == (5, 10)


def test_qat_on_the_asl_cnn_switches_phases_and_freezes_observers_and_batchnorm(tmp_path):
    train_in_process(tmp_path, *ASL, "trainer.max_steps=14", "trainer.checkpoint_every=1",
                     "trainer.keep_last=20")
    report = _report(tmp_path)
    assert report["agreement"] >= 0.95
    assert _int8_runs(tmp_path, torch.rand(3, 28, 28)).shape == (3, 24)

    def state(step):
        return torch.load(tmp_path / "checkpoints" / f"step-{step:08d}.pt",
                          weights_only=True)["model"]

    observer = "graph.activation_post_process_0.activation_post_process.min_val"
    bn = next(k for k in state(1) if k.endswith("running_mean"))
    flag = "graph.activation_post_process_0.fake_quant_enabled"
    # The first 3 steps run in float; checkpoint N is written after N steps.
    assert int(state(3)[flag]) == 0 and int(state(4)[flag]) == 1
    assert not torch.equal(state(5)[observer], state(7)[observer])  # observing
    assert torch.equal(state(8)[observer], state(14)[observer])  # frozen from step 8
    assert not torch.equal(state(6)[bn], state(9)[bn])  # BatchNorm still learning
    assert torch.equal(state(10)[bn], state(14)[bn])  # frozen from step 10


# Resume on the digits MLP with BatchNorm (the same QAT schedule: observers, then BatchNorm,
# frozen in the exported graph): its preparation takes seconds where the ASL CNN's conv+BN
# patterns take torchao most of a minute per run; the CNN's phases are tested above.
RESUME = ("data.batch_size=64", "model.norm=batch", *ASL[3:], "trainer.max_steps=14",
          "logger.tensorboard=false", "quant.export=false")


@pytest.fixture(scope="module")
def uninterrupted_qat(tmp_path_factory) -> tuple[dict, dict]:
    folder = tmp_path_factory.mktemp("whole")
    metrics = train_in_process(folder, *RESUME)
    return metrics, torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["model"]


# Stopped while observers learn, and after both observers (step 8) and BatchNorm (10) froze.
@pytest.mark.parametrize("stop", [5, 11], ids=["observing", "observers_and_bn_frozen"])
def test_resume_in_the_middle_of_qat_is_bit_exact(tmp_path, stop, uninterrupted_qat):
    whole, a = uninterrupted_qat
    train_in_process(tmp_path, *RESUME, f"trainer.max_steps={stop}")
    resumed = train_in_process(tmp_path, *RESUME)
    assert resumed["resumed_from"] and resumed["test_loss"] == whole["test_loss"]
    assert not (tmp_path / "quant_report.json").exists()  # quant.export=false
    b = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "weights or observers differ"


def test_qat_under_two_gloo_workers_keeps_the_replicas_observers_identical(tmp_path, fake_mnist):
    # Every checkpoint compares the ranks' parameters and quantization buffers and fails the
    # run if they differ; each worker's observers see only its own shard.
    result = run("torchrun", 2, "recipe=mnist", f"data.root={fake_mnist}",
                 "data.download=false", "quant=qat", "quant.start_step=2",
                 "trainer.max_steps=12", "trainer.checkpoint_every=3", *FAST_REPORT,
                 f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert "quantization-aware training phase: fake-quant, observers on" in result.stdout
    assert _report(tmp_path / "r")["agreement"] >= 0.95


def test_trainer_export_post_training_quantizes_a_float_checkpoint(tmp_path, fake_mnist):
    train_in_process(tmp_path, "recipe=mnist", f"data.root={fake_mnist}",
                     "data.download=false", "trainer.epochs=1", *FAST_REPORT)
    assert not (tmp_path / "quant_report.json").exists()
    out = subprocess.run(
        [sys.executable, "-m", "trainer.tools.export", str(tmp_path), "quant=ptq",
         "quant.calibration_batches=2", "quant.latency_repeats=3", "--out", str(tmp_path / "x")],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| int8 (PTQ) |" in out.stdout
    report = _report(tmp_path / "x")
    assert report["mode"] == "ptq" and report["agreement"] >= 0.9
    refused = subprocess.run([sys.executable, "-m", "trainer.tools.export", str(tmp_path),
                              "quant=qat"], capture_output=True, text=True)
    assert refused.returncode == 2 and "use quant=ptq" in refused.stderr


def test_a_model_with_an_unsupported_layer_is_refused_naming_the_layer(tmp_path):
    with pytest.raises(UserError, match=r"layer 'embedding' \(Embedding\) cannot be quantized"):
        train_in_process(tmp_path, "recipe=headlines", "data.synthetic=true", "quant=qat")


@pytest.mark.parametrize("overrides,message", [
    (("quant.start_step=10", "quant.freeze_bn_step=5"), "quant.freeze_bn_step=5 comes before"),
    (("recipe=vgg16_transfer",), "staged training and quant=qat do not combine"),
    (("model.ghost_batch_size=8",), "model.ghost_batch_size=8 is invalid"),
])
def test_bad_qat_settings_are_refused_before_training(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        train_in_process(tmp_path, "quant=qat", *overrides)


def test_without_torchao_the_line_gives_a_command_a_wheel_user_can_run(monkeypatch):
    from trainer.quant.qat import require_torchao

    monkeypatch.setitem(sys.modules, "torchao", None)  # as where it is not installed
    with pytest.raises(UserError, match=r"quantization needs torchao: pip install "
                                        r"torchao==0.18.0 \(the version trainer's qat extra"):
        require_torchao()
