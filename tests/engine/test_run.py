"""Whole runs: run-directory files, TensorBoard contents, determinism, early stop, multirun."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from tests.config.test_config import RECIPES
from tests.helpers import ROOT, run_cli, train_in_process

METRIC_KEYS = {
    "test_accuracy",
    "test_loss",
    "train_loss",
    "samples_per_sec",
    "steps",
    "epochs",
    "wall_time_s",
}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_default_run_writes_every_promised_file(tmp_path):
    metrics = train_in_process(tmp_path, "trainer.epochs=2", "trainer.log_every=5")
    assert METRIC_KEYS <= set(json.loads((tmp_path / "metrics.json").read_text()))
    # 1,438 training digits less the 144 held out for validation, at batch 64.
    assert metrics["steps"] == 2 * (1294 // 64) and metrics["epochs"] == 2.0
    assert 0.5 < metrics["test_accuracy"] <= 1.0 and metrics["samples_per_sec"] > 0
    assert "in_features: 64" in (tmp_path / "config.yaml").read_text()
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["model"]["1.weight"].shape == (512, 64)
    assert state["progress"]["step"] == metrics["steps"]


def test_tensorboard_has_scalars_hparams_and_prediction_images(tmp_path):
    train_in_process(tmp_path, "trainer.epochs=2", "trainer.log_every=5")
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in (
        "train/loss",
        "train/lr",
        "train/samples_per_sec",
        "val/loss",
        "val/accuracy",
        "train/epoch_loss",
        "train/epoch_accuracy",
        "time/epoch_s",
        "hparam/test_accuracy",
    ):
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("val/accuracy")] == [20, 40]
    assert [e.step for e in events.Scalars("test/accuracy")] == [40]  # once, at the end
    assert events.Scalars("train/lr")[0].value == pytest.approx(0.05)
    assert "val/predictions" in events.Tags()["images"]
    image = events.Images("val/predictions")[-1]
    assert image.width == 8 * 96 and image.height == 2 * (96 + 20)  # 16 captioned tiles


def test_hparams_tab_lines_config_up_against_final_metrics(tmp_path):
    train_in_process(tmp_path, "trainer.max_steps=5", "data.batch_size=32", "optimizer.lr=0.02")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "hparam/test_accuracy" in [m.name.tag for m in experiment.metric_infos]
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = start.session_start_info.hparams
    assert values["data.batch_size"].number_value == 32
    assert values["optimizer.lr"].number_value == pytest.approx(0.02)
    # Which class a group built is a hyper-parameter too (a sweep over optimizer=sgd,adam).
    assert values["optimizer._target_"].string_value == "SGD"
    final = json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"]
    assert events.Scalars("hparam/test_accuracy")[-1].value == pytest.approx(final)
    # Evaluations also against the samples seen: 20 steps of 64 digits an epoch.
    assert [e.step for e in events.Scalars("vs_samples/val/accuracy")] == [5 * 32]


def test_hparams_tab_shows_what_the_command_line_chose_and_the_metrics_first(tmp_path):
    result = run_cli("trainer.max_steps=5", "optimizer=lamb", "data.batch_size=32",
                     "logger.sample_predictions=0", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    events = EventAccumulator(str(tmp_path / "r" / "tb"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = [m.name.tag for m in experiment.metric_infos]
    assert metrics[:2] == ["hparam/test_accuracy", "hparam/test_loss"]
    # The best evaluation under its metric's name (never one column mixing metrics); no
    # numbers that describe the run rather than compare it.
    assert "hparam/best_val_accuracy" in metrics and "hparam/best_value" not in metrics
    assert "hparam/world_size" not in metrics and "hparam/startup_s" not in metrics
    shown = [h.name for h in experiment.hparam_infos]
    # What the command line chose first: in a sweep, the columns that differ.
    assert shown[:3] == ["trainer.max_steps", "optimizer", "data.batch_size"]
    assert {"optimizer", "trainer.max_steps", "data.batch_size", "optimizer.lr",
            "workers"} <= set(shown)
    assert len(shown) <= 15 and "data.download" not in shown  # not the whole config
    values = HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info.hparams
    assert values["optimizer"].string_value == "lamb"
    assert values["optimizer._target_"].string_value == "LAMB"


def test_resumed_run_shows_each_step_once_in_tensorboard(tmp_path):
    train_in_process(tmp_path, "trainer.max_steps=10", "trainer.checkpoint_every=5",
                     "trainer.log_every=1")
    # As if killed after logging step 10 but before its checkpoint landed.
    (tmp_path / "checkpoints" / "step-00000010.pt").unlink()
    (tmp_path / "checkpoints" / "last.pt").unlink()
    # TensorBoard reads event files in name order, and names start with the creation second;
    # two writers of one process within a second would sort by a counter instead.
    time.sleep(1.1)
    train_in_process(tmp_path, "trainer.max_steps=10", "trainer.checkpoint_every=5",
                     "trainer.log_every=1")
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 11))


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    args = ("trainer.max_steps=30",)
    train_in_process(tmp_path / "a", *args)
    train_in_process(tmp_path / "b", *args)
    train_in_process(tmp_path / "c", *args, "trainer.seed=1")
    a, b, c = (_weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["1.weight"], c["1.weight"])


def test_checkpoint_every_steps_and_keep_last(tmp_path):
    train_in_process(
        tmp_path, "trainer.max_steps=30", "trainer.checkpoint_every=4", "trainer.keep_last=2"
    )
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*.pt"))
    assert names == ["step-00000028.pt", "step-00000030.pt"]


def test_early_stop_ends_the_run_after_patience(tmp_path):
    metrics = train_in_process(
        tmp_path,
        "optimizer.lr=1e-9",
        "trainer.eval_every=1",
        "callbacks=[default,early_stopping]",
        "callbacks.early_stopping.patience=2",
        "trainer.max_steps=100",
    )
    # Step 1 sets the best; steps 2 and 3 do not beat it at lr 1e-9: stop after step 3.
    assert metrics["stopped_early"] is True and metrics["steps"] == 3


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_runs_a_few_steps(tmp_path, recipe, recipe_data):
    metrics = train_in_process(
        tmp_path, f"recipe={recipe}", *recipe_data(recipe), "trainer.max_steps=3",
        "trainer.checkpoint_every=2",
    )
    assert metrics["steps"] == 3 and metrics["test_loss"] > 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*.pt")) == [
        "step-00000002.pt", "step-00000003.pt",
    ]


def test_mnist_recipe_runs_on_idx_files(tmp_path, fake_mnist):
    metrics = train_in_process(
        tmp_path,
        "recipe=mnist",
        f"data.root={fake_mnist}",
        "data.download=false",
        "trainer.epochs=3",
        "data.batch_size=50",
    )
    assert metrics["steps"] == 3 * (1100 // 50)  # 1,200 images less the 100 (1/12) held out
    assert metrics["test_accuracy"] > 0.9  # the toy classes are easy to separate


def test_asl_cnn_model_trains_on_mnist_shaped_batches(tmp_path, fake_mnist):
    metrics = train_in_process(
        tmp_path, "recipe=mnist", "model=asl_cnn", "model.num_classes=10",
        f"data.root={fake_mnist}", "data.download=false", "data.batch_size=50",
        "trainer.epochs=2",
    )
    assert metrics["test_accuracy"] > 0.9
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert state["features.0.weight"].shape == (75, 1, 3, 3)
    assert state["classifier.1.weight"].shape == (512, 25 * 4 * 4)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_every_optimizer_trains(tmp_path, optimizer):
    metrics = train_in_process(tmp_path, f"optimizer={optimizer}", "trainer.epochs=3")
    assert metrics["test_accuracy"] > 0.6


def test_dropout_option_reaches_the_model(tmp_path):
    train_in_process(tmp_path, "model.dropout=0.3", "trainer.max_steps=2")
    config = (tmp_path / "config.yaml").read_text()
    assert "dropout: 0.3" in config


def test_console_script_and_module_both_run(tmp_path):
    script = Path(sys.executable).with_name("trainer")
    assert shutil.which(str(script)), "pip install -e . must install the trainer script"
    result = run_cli("trainer.max_steps=3", f"hydra.run.dir={tmp_path}/m", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "NOT MNIST" in result.stdout  # the offline default says what it trains on
    assert (tmp_path / "m" / "metrics.json").exists()


def test_multirun_sweeps_batch_sizes_into_separate_directories(tmp_path):
    result = run_cli(
        "-m",
        "data.batch_size=32,64",
        "trainer.max_steps=3",
        f"hydra.sweep.dir={tmp_path}/sw",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    found = sorted((tmp_path / "sw").glob("*/metrics.json"))
    assert len(found) == 2
    batches = sorted(json.loads(p.read_text())["global_batch_size"] for p in found)
    assert batches == [32, 64]


def test_readme_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_line = next(line for line in ci.splitlines() if "pytest" in line)
    assert test_line.strip() in readme


def test_the_run_closes_with_a_summary_and_counts_epochs_like_its_evaluations(tmp_path):
    result = run_cli("trainer.max_steps=30", "trainer.log_every=10", "logger.sample_predictions=0",
                     f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    # 1,294 training digits (144 held out) at batch 64: 20 steps an epoch, step 30 is 1.5 in.
    assert "step 30/30 epoch 1.50 " in result.stdout and "step 30 (epoch 1.50)" in result.stdout
    closing = lines[-7:]
    assert closing[0].startswith("done: 30 steps (1.50 epochs) on 1 worker(s) in ")
    # The test split, read once at the end: the final model's and the selected model's.
    assert closing[1].startswith("test, final model (step 30): accuracy 0.")
    assert ", loss " in closing[1]
    assert closing[2].startswith("best: val/accuracy 0.") and "best.pt" in closing[2]
    assert closing[3].startswith("test, best.pt (step ") and "accuracy 0." in closing[3]
    assert closing[4] == f"checkpoint: {tmp_path / 'r' / 'checkpoints' / 'step-00000030.pt'}"
    assert closing[5].startswith(f"outputs: {tmp_path / 'r'} (metrics.json")
    assert result.stdout.count("run directory:") == 1  # said once, at the start
    assert closing[6] == f"tensorboard --logdir {tmp_path / 'r' / 'tb'}"
    assert "validation: 144 of the 1,438 training rows held out" in result.stdout


def test_a_second_ranks_own_sweep_folder_is_not_left_behind(tmp_path):
    """Under torchrun each rank's Hydra timestamps its own sweep folder (a second apart) and
    writes multirun.yaml there; the runs use rank 0's. Rank 1's folder goes with its last job
    folder, whatever job it was; rank 0's, and folders holding anything else, stay."""
    from trainer.engine.build import drop_unused_run_dir

    shared, own = tmp_path / "T0", tmp_path / "T1"
    for job in ("0_data.batch_size=32", "1_data.batch_size=64"):
        (shared / job).mkdir(parents=True)
        (own / job / ".hydra").mkdir(parents=True)
        if job.startswith("0"):
            (own / "multirun.yaml").write_text("hydra: {}\n")
        drop_unused_run_dir(own / job, shared / job)
        assert not own.exists()
    (own / "0_x" / ".hydra").mkdir(parents=True)
    (own / "notes.txt").write_text("mine")
    drop_unused_run_dir(own / "0_x", shared / "0_x")
    assert (own / "notes.txt").exists() and not (own / "0_x").exists() and shared.is_dir()
