"""A user's own package: its config folder, model, torch Datasets and callback, with no edit to
the framework (examples/user_project, put on PYTHONPATH here; tests/test_package.py installs it
as a wheel). Also trainer.fit and the key checks that hold for options without a schema."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    EXACT,
    cli_in_process,
    max_difference,
    run_cli,
    train_in_process,
    weights,
)
from tests.helpers.user_project import (
    CONF,
    ENV,
    FIT_SCRIPT,
    PROJECT,
    SEARCHPATH,
    SHAPES,
    torchrun,
    trainer,
)


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def shapes_one(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shapes1")
    result = trainer("--config-dir", str(CONF), *SHAPES, f"hydra.run.dir={folder}/run",
                     cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run"


def test_config_dir_recipe_trains_the_users_model_data_and_callback(shapes_one):
    metrics = json.loads((shapes_one / "metrics.json").read_text())
    # 512 shapes less the 51 held out for validation, at batch 32: 14 steps an epoch; two
    # epochs of a small CNN at a low lr: it learns (its validation loss falls), not far yet.
    assert metrics["steps"] == 2 * 14 and metrics["test_accuracy"] > 0.5
    validation = [h["val/loss"] for h in metrics["history"]]
    assert len(validation) == 2 and validation[1] < validation[0]
    # The project's own task metrics, from sums the framework reduced (shapes/metrics.py).
    p, r = metrics["test_precision"], metrics["test_recall"]
    assert 0 < p <= 1 and 0 < r <= 1 and abs(metrics["test_f1"] - 2 * p * r / (p + r)) < 1e-12
    assert 0 <= metrics["train_accuracy"] <= 1
    best = json.loads((shapes_one / "best.json").read_text())  # the user's callback
    # The user's callback saw the validation accuracy best.pt was chosen on.
    assert best["metric"] == "val/accuracy" and best["best"] == metrics["best_value"]
    saved = torch.load(shapes_one / "checkpoints" / "last.pt", weights_only=True)
    assert saved["callbacks"]["best"]["best"] == best["best"]
    assert saved["config"]["model"]["_target_"] == "shapes.model.SmallCNN"


def test_two_workers_on_torch_datasets_reproduce_one_worker(tmp_path, shapes_one):
    """Disjoint equal shards of a Dataset read in DataLoader workers, in float64."""
    result = trainer(SEARCHPATH, *SHAPES, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path,
                     launcher=torchrun(2))
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_difference(weights(shapes_one), weights(tmp_path / "run")) < EXACT
    two = json.loads((tmp_path / "run" / "metrics.json").read_text())
    one = json.loads((shapes_one / "metrics.json").read_text())
    assert two["world_size"] == 2
    for key in ("test_f1", "test_precision", "test_recall", "test_accuracy"):
        assert abs(two[key] - one[key]) < 1e-12, key  # extra sums reduced over both workers


def test_resume_mid_epoch_on_torch_datasets_is_exact(tmp_path, shapes_one):
    """From the step-8 checkpoint (half way through epoch 1) to the end, in a new directory."""
    first = trainer("--config-dir", str(CONF), *SHAPES, "trainer.checkpoint_every=8",
                    "trainer.keep_last=10", f"hydra.run.dir={tmp_path}/a", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    middle = tmp_path / "a" / "checkpoints" / "step-00000008.pt"
    result = trainer("--config-dir", str(CONF), *SHAPES, f"trainer.resume={middle}",
                     f"hydra.run.dir={tmp_path}/b", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {middle}" in result.stdout
    resumed, straight = weights(tmp_path / "b"), weights(shapes_one)
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_config_dir_of_a_project_that_is_not_installed_imports_its_code(tmp_path):
    """docs/extending.md's line as written: the console script (which, unlike python -m,
    puts nothing on the import path) from the project folder, the project not installed."""
    from tests.helpers import SHRINK

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = Path(sys.executable).parent / "trainer"
    result = subprocess.run([str(script), "--config-dir", "shapes/conf", "recipe=shapes",
                             "trainer.max_steps=2", f"hydra.run.dir={tmp_path}/r", *SHRINK],
                            cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["steps"] == 2


def test_searchpath_options_are_known_and_typos_still_one_line(tmp_path):
    line = one_line(trainer(SEARCHPATH, "recipe=shape", cwd=tmp_path))
    assert "unknown recipe 'shape'" in line and "shapes" in line and "mnist" in line
    line = one_line(trainer(SEARCHPATH, "recipe=shapes", "model=small_cnnn", cwd=tmp_path))
    assert "unknown model 'small_cnnn'" in line and "small_cnn" in line


def test_a_projects_callback_option_is_chosen_beside_the_frameworks(monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT))
    from trainer.config import compose_config

    cfg = compose_config(SEARCHPATH, "recipe=shapes", "callbacks=[default,best_accuracy]",
                         "callbacks.best_accuracy.metric=val/f1")
    assert cfg.callbacks.best_accuracy == {"_target_": "shapes.callbacks.BestAccuracy",
                                           "metric": "val/f1"}
    assert cfg.callbacks.best_checkpoint.monitor == "val/accuracy"  # the framework's, kept
    assert cfg.callbacks.best._target_ == "shapes.callbacks.BestAccuracy"  # the recipe's


@pytest.mark.parametrize("override,needles", [
    ("+model.widht=3", ["model.widht is not an argument of shapes.model.SmallCNN", "width"]),
    ("+data.train.lenght=3", ["data.train.lenght", "ShapesDataset", "length"]),
    ("+callbacks.best.metirc=x", ["callbacks.best.metirc", "BestAccuracy", "metric"]),
    ("+trainer.no_such_key=1", ["trainer.no_such_key is not a key of the trainer group"]),
    ("+trainer.epoch=1", ["did you mean trainer.epochs"]),
    ("+no_such_group=1", ["no_such_group is not a key of the config"]),
    # Without the +: the nearest key, or how to add one the class takes (never a hint that
    # leads to a second refusal).
    ("model.widht=3", ["model.widht is not an argument of shapes.model.SmallCNN; did you mean "
                       "model.width?"]),
    ("data.batchsize=16", ["did you mean data.batch_size?"]),
    ("data.train.size=8", ["data.train.size is not set by the option (its keys: length, seed)",
                           "shapes.data.ShapesDataset takes it: add it with +data.train.size="]),
    ("callbacks.best_checkpoint.monitr=x", ["did you mean callbacks.best_checkpoint.monitor?"]),
])
def test_misspelt_keys_without_a_schema_fail_at_start_in_one_line(tmp_path, monkeypatch,
                                                                  override, needles):
    """The CLI's main() in this process: the line and what is written are tested."""
    monkeypatch.syspath_prepend(str(PROJECT))
    result = cli_in_process(SEARCHPATH, "recipe=shapes", override,
                            f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    line = one_line(result)
    assert all(n in line for n in needles), line
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_callback_is_removed_by_name_the_frameworks_own_included(tmp_path):
    result = trainer(SEARCHPATH, "recipe=shapes", "trainer.max_steps=4", "callbacks.best=null",
                     "+callbacks.noise_scale=null", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "r" / "best.json").exists()
    assert "b_simple" not in json.loads((tmp_path / "r" / "metrics.json").read_text())


def test_a_task_whose_counts_do_not_match_its_extra_sums_is_named(monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT))
    from shapes.metrics import F1Classification

    from trainer.errors import UserError
    from trainer.tasks import batch_counts

    class Broken(F1Classification):
        extra_sums = ("true_pos",)

    with pytest.raises(UserError, match=r"Broken.counts returned shape \(4,\); it must return"):
        batch_counts(Broken(), torch.zeros(3, 2), torch.tensor([0, 1, 1]))


def test_torchvision_fakedata_through_trainer_data_datasets(tmp_path):
    conf = tmp_path / "conf" / "data"
    conf.mkdir(parents=True)
    (conf / "fake.yaml").write_text(
        "_target_: trainer.data.Datasets\n"
        "train: {_target_: torchvision.datasets.FakeData, size: 64, image_size: [1, 28, 28],\n"
        "        num_classes: 10, transform: {_target_: torchvision.transforms.ToTensor}}\n"
        "test: {_target_: torchvision.datasets.FakeData, size: 32, image_size: [1, 28, 28],\n"
        "       num_classes: 10, random_offset: 1000,\n"
        "       transform: {_target_: torchvision.transforms.ToTensor}}\n")
    result = run_cli("--config-dir", str(tmp_path / "conf"), "recipe=mnist", "data=fake",
                     "data.batch_size=16", "trainer.epochs=1", f"hydra.run.dir={tmp_path}/run",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data: FakeData (64 samples) / FakeData (32 samples)" in result.stdout
    # 64 images less 5 (1/12, at random: FakeData has no targets) held out, at batch 16.
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 3


def test_a_data_target_that_is_not_trainer_data_says_what_to_use(tmp_path):
    result = run_cli("data._target_=torchvision.datasets.FakeData", "+data.size=10",
                     f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    line = one_line(result)
    assert "is a torch Dataset, not a trainer data object" in line
    assert "trainer.data.Datasets with train: and test:" in line


def test_fit_api_trains_objects_twice_in_one_process_and_on_two_workers(tmp_path, shapes_one):
    """trainer.fit(model=, data=(train, test), callbacks=[...]) equals the config-driven run
    (same seed, same model), raises UserError instead of exiting, runs again, and the same
    script under torchrun equals it in float64."""
    script = tmp_path / "fit_script.py"
    script.write_text(FIT_SCRIPT)
    env = {**os.environ, **ENV}
    outputs = {}
    for n, launcher in ((1, [sys.executable]), (2, torchrun(2))):
        out = subprocess.run([*launcher, str(script), str(tmp_path / f"fit{n}")], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        outputs[n] = json.loads(out.stdout.split("RESULT", 1)[1].splitlines()[0])
    one = outputs[1]
    assert one["steps"] == 28 and one["again"] == 3 and one["best"] == one["best_value"]
    for n in (1, 2):  # trainer.evaluate and trainer.predict on the last checkpoint
        assert abs(outputs[n]["evaluated"] - one["acc"]) < 1e-12
        assert abs(outputs[n]["predicted"] - one["acc"]) < 1e-12
    assert "trainer.epochz" in one["error"]
    for n in (1, 2):  # the transform and the hook given to fit ran, on every worker
        assert abs(outputs[n]["hooked_loss"] - math.log(2)) < 1e-12 and outputs[n]["clipped"] == 1
    assert (tmp_path / "fit1" / "fit_best.json").exists()
    reference = weights(shapes_one)
    assert max_difference(reference, weights(tmp_path / "fit1")) < EXACT
    assert max_difference(reference, weights(tmp_path / "fit2")) < EXACT
    # The task that owns the forward and the loss of dict batches: 2 workers = 1 worker.
    assert 0 < outputs[1]["center_mse"] < 0.2
    assert abs(outputs[2]["center_mse"] - outputs[1]["center_mse"]) < 1e-12
    assert max_difference(weights(tmp_path / "fit1_located"),
                          weights(tmp_path / "fit2_located")) < EXACT
    saved = torch.load(tmp_path / "fit1" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["callbacks"]["BestAccuracy"]["best"] == one["best"]  # keyed by its class
    assert saved["config"]["model"]["_target_"] == "shapes.model.SmallCNN"
    assert saved["config"]["data"]["_target_"] == "trainer.data.datasets.Datasets"


# Dict batches ({"image", "radius", "label"}) for a model of two inputs, through the default
# forward (the targets under task.target_key, the rest as the model's keyword arguments).
FIELDS = ("data=shape_fields", "model=two_input_cnn", "trainer.max_steps=8",
          "noise=small_batch", "noise.small_batch=8")


def test_dict_batches_feed_a_two_input_model_and_two_workers_reproduce_one(tmp_path,
                                                                           monkeypatch):
    """Cut into micro-batches (accumulate=2) on one worker and sharded over two, with
    per-sample loss weights (noise=small_batch) and per-sample dropout over the dict: the same
    weights in float64."""
    monkeypatch.syspath_prepend(str(PROJECT))
    one = train_in_process(tmp_path / "one", SEARCHPATH, *SHAPES, *FIELDS, "trainer.accumulate=2")
    assert one["steps"] == 8 and 0 <= one["test_f1"] <= 1  # the recipe's F1 task, unchanged
    result = trainer(SEARCHPATH, *SHAPES, *FIELDS, f"hydra.run.dir={tmp_path}/two", cwd=tmp_path,
                     launcher=torchrun(2))
    assert result.returncode == 0, result.stderr[-3000:]
    reference = weights(tmp_path / "one")
    assert max_difference(reference, weights(tmp_path / "two")) < EXACT
    train_in_process(tmp_path / "plain", SEARCHPATH, *SHAPES, *FIELDS[:-2])
    assert max_difference(reference, weights(tmp_path / "plain")) > 1e-6  # (the noise did it)


def test_a_dict_batch_without_the_target_key_says_which_key_to_set(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT))
    from trainer.errors import UserError

    with pytest.raises(UserError) as caught:
        train_in_process(tmp_path / "r", SEARCHPATH, *SHAPES, *FIELDS, "task=classification",
                         "task.target_key=y")
    line = str(caught.value)
    assert "dict(image: 32x1x16x16 float64, radius: 32x1 float64, label: 32 int64)" in line
    assert "without the key 'y'" in line and "set task.target_key" in line


# A user's own model transform and gradient hook (shapes/transforms.py, shapes/callbacks.py),
# trained in this process: the process start is not what these test.
HOOKED = (SEARCHPATH, *SHAPES[:-1], "trainer.max_steps=6", "trainer.log_every=1")


def test_a_users_transform_from_config_changes_the_model_before_training(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT))
    zeroed = train_in_process(tmp_path / "z", *HOOKED, "trainer.max_steps=1",
                              "+transforms.zero_head._target_=shapes.transforms.ZeroInitHead")
    # Equal logits for every input: the first step's loss is ln 2 (two classes), exactly.
    assert abs(zeroed["train_loss"] - math.log(2)) < 1e-12
    plain = train_in_process(tmp_path / "p", *HOOKED, "trainer.max_steps=1")
    assert abs(plain["train_loss"] - math.log(2)) > 1e-4  # (the transform did it)
    saved = torch.load(tmp_path / "z" / "checkpoints" / "last.pt", weights_only=True)
    target = saved["config"]["transforms"]["zero_head"]["_target_"]
    assert target == "shapes.transforms.ZeroInitHead"


def test_a_transform_target_that_is_not_a_transform_is_named(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT))
    from trainer.errors import UserError

    with pytest.raises(UserError, match=r"transforms.bad is a BestAccuracy, not a "
                                        r"trainer.ModelTransform"):
        train_in_process(tmp_path / "r", *HOOKED,
                         "+transforms.bad._target_=shapes.callbacks.BestAccuracy")
    assert not list((tmp_path / "r").rglob("*.pt"))  # refused before the first step


def test_a_users_gradient_hook_clips_where_the_built_in_clipping_does(tmp_path, monkeypatch):
    """The user's clipping rule in on_before_optimizer_step gives the built-in
    trainer.clip_grad_norm's weights (float64), and differs from not clipping; on two workers
    it gives one worker's."""
    monkeypatch.syspath_prepend(str(PROJECT))
    hook = ("+callbacks.clip._target_=shapes.callbacks.ClipGradNorm",
            "+callbacks.clip.max_norm=0.05")
    train_in_process(tmp_path / "user", *HOOKED, *hook)
    train_in_process(tmp_path / "builtin", *HOOKED, "trainer.clip_grad_norm=0.05")
    train_in_process(tmp_path / "none", *HOOKED)
    user = weights(tmp_path / "user")
    assert max_difference(user, weights(tmp_path / "builtin")) < EXACT
    assert max_difference(user, weights(tmp_path / "none")) > 1e-4
    result = trainer(*HOOKED, *hook, f"hydra.run.dir={tmp_path}/two", cwd=tmp_path,
                     launcher=torchrun(2))
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_difference(user, weights(tmp_path / "two")) < EXACT


def test_a_users_log_output_gets_what_every_output_gets(tmp_path, monkeypatch):
    """The project's JSON-lines output beside the shipped CSV one (logger=csv): the same
    scalars, the same final metrics, the same hyper-parameters; TensorBoard still written."""
    monkeypatch.syspath_prepend(str(PROJECT))
    metrics = train_in_process(tmp_path, *HOOKED, "logger=csv",
                               "+logger.outputs.jsonl._target_=shapes.outputs.JsonLines")
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    mine = {(e["step"], e["tag"], e["value"]) for e in lines if "tag" in e}
    with (tmp_path / "scalars.csv").open() as f:
        rows = {(int(r["step"]), r["tag"], float(r["value"])) for r in csv.DictReader(f)}
    final = lines[-1]
    assert {tag for _, tag, _ in mine} >= {"train/loss", "val/accuracy", "train/lr"}
    assert rows == mine | {(6, k, v) for k, v in final["metrics"].items()}
    assert final["metrics"]["hparam/test_accuracy"] == metrics["test_accuracy"]
    assert final["hparams"] == json.loads((tmp_path / "hparams.json").read_text())
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_a_resumed_run_logs_each_step_once_in_the_csv_output(tmp_path):
    run = ("trainer.log_every=1", "logger=csv", "logger.tensorboard=false")
    train_in_process(tmp_path, *run, "trainer.max_steps=4")
    train_in_process(tmp_path, *run, "trainer.max_steps=8")
    with (tmp_path / "scalars.csv").open() as f:
        rows = [(int(r["step"]), r["tag"]) for r in csv.DictReader(f)]
    losses = [step for step, tag in rows if tag == "train/loss"]
    assert losses == list(range(1, 9))  # steps 1-4 kept, 5-8 logged once
    assert not (tmp_path / "tb").exists()


def test_a_log_output_target_that_is_not_an_output_is_named(tmp_path):
    from trainer.errors import UserError

    with pytest.raises(UserError, match=r"logger.outputs.x is a GradClip, not a trainer.LogOutput"):
        train_in_process(tmp_path, "+logger.outputs.x._target_=trainer.optim.clip.GradClip")
