"""Every bad input a user reported, and its neighbours, as a table: one line naming the
problem and the fix, exit 2, no traceback, nothing written that was not there.

Rows cover the config (Hydra's own errors included) and data files (checkpoints and the
``trainer-*`` commands that read them: ``tests/io/test_bad_checkpoint_table.py``);
``tests/config/test_bad_input.py`` has the older rows and the
nothing-lost checks, ``tests/io/test_run_directory.py`` and
``tests/parallel/test_same_config.py`` the launch rows (a live run's directory, workers with
different configs), ``tests/engine/test_preemption.py`` the signals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import SHRINK, cli_in_process
from tests.helpers.errors import one_line_error
from trainer_recipes.asl.data import HEADER

CONFIG = [
    # (overrides, what the one line must say)
    (["optimizer=adam", "optimizer.eps=nan"], "optimizer.eps=nan is invalid: use a finite"),
    (["trainer.seed=-1"], "trainer.seed=-1 is invalid: use an integer from 0 to 2**32-1"),
    (["trainer.seed=18446744073709551616"], "trainer.seed=18446744073709551616 is invalid"),
    (["optimizer.lr=1e300"], "optimizer.lr=1e+300 is invalid: use a learning rate float32"),
    (["optimizer.weight_decay=inf"], "optimizer.weight_decay=inf is invalid: use a finite"),
    (["hydra.run.dir=/proc/nope/run"], "hydra.run.dir=/proc/nope/run is not usable"),
    (["trainer.epochs=${oc.env:TRAINER_TEST_NOPE}"],
     "trainer.epochs: KeyError raised while resolving interpolation"),
    (["trainer.epochs=${trainer.nonexistent}"],
     "trainer.epochs: Interpolation key 'trainer.nonexistent' not found"),
    (["=3"], "'=3' is not an override: write KEY=VALUE"),
    (["model.hidden=[0]"], "MLP refused its arguments (hidden must list one or more"),
    (["model.hidden=[a]"], "MLP refused its arguments (invalid literal"),
    (["model.dropout=1.5"], "MLP refused its arguments (dropout must be in [0, 1)"),
    (["model.hidden=[100000000]"], "building trainer_recipes.mnist.model.MLP ran out of memory"),
    (["trainer.epochz=3"], "trainer.epochz is not a key of the trainer group; did you mean "
                           "trainer.epochs?"),
    (["+trainer.no_such_key=1"], "trainer.no_such_key is not a key of the trainer group"),
    (["trainer.epochs=many"], "trainer.epochs: Value 'many' of type 'str' could not be "
                              "converted to Integer"),
    (["optimizer=adam", "optimizer.momentum=0.9"],
     "optimizer.momentum is not a key of the optimizer group; it has: "),
    (["trainer.epochs=[1"], "an override cannot be parsed (no viable alternative"),
    (["optimizer=lamb", "optimizer.betas=[1.5,0.9]"], "LAMB refused its arguments"),
    (["optimizer=adam", "optimizer.betas=[2,0.9]"], "torch.optim.Adam refused its arguments"),
    (["data.batch_size=abc"], "data.batch_size=abc is invalid: use a positive integer"),
    (["data.eval_batch_size=0"], "data.eval_batch_size=0 is invalid"),
    (["trainer.checkpoint_every_minutes=0"], "trainer.checkpoint_every_minutes=0.0 is invalid"),
    (["trainer.log_every=0"], "trainer.log_every=0 is invalid"),
    (["trainer.epochs=0"], "trainer.epochs=0 is invalid"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is invalid"),
    (["trainer.accumulate=0"], "trainer.accumulate=0 is invalid"),
    (["trainer.early_stop=3"], "trainer.early_stop moved out of the trainer group: use "
                               "callbacks=[default,early_stopping] "
                               "callbacks.early_stopping.patience=N"),
    (["callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=-1"],
     "EarlyStopping refused its arguments (patience=-1: use a number of evaluations >= 1)"),
    # Found before the first step (it used to be after a whole epoch, checkpoints left).
    (["callbacks=[default,early_stopping]", "callbacks.early_stopping.monitor=val/f2"],
     "callbacks.early_stopping.monitor=val/f2 is not a validation metric of this task; use one "
     "of val/loss, val/accuracy"),
    # A monitor named before validation splits (the test split's eval/ metrics).
    (["callbacks.best_checkpoint.monitor=eval/accuracy"],
     "callbacks.best_checkpoint.monitor=eval/accuracy: evaluations during training are on the "
     "validation split and report val/<name>; use callbacks.best_checkpoint.monitor="
     "val/accuracy"),
    # The validation share: a value, and what it leaves of the data.
    (["data.val_fraction=1"], "data.val_fraction=1 is invalid: use a share from 0"),
    (["data.val_fraction=-0.1"], "data.val_fraction=-0.1 is invalid: use a share from 0"),
    (["data.val_fraction=0.9999"], "data.val_fraction=0.9999 of the 1,438 training rows leaves "
     "no training row"),
    (["data.val_fraction=0.97"], "data.batch_size=64: global batch 64 is larger than the 43 "
     "training samples (data.val_fraction=0.97 held 1,395 rows out for validation)"),
    (["callbacks.best_checkpoint.mode=up"],
     "BestCheckpoint refused its arguments (mode='up': use max or min)"),
    (["callbacks=[default,profiler]", "callbacks.profiler.active=0"],
     "Profiler refused its arguments (active=0: use a step count >= 1)"),
    (["dist.op=sum"], "dist.op=sum is invalid: use average or adasum"),
    (["model.hiden=64"], "model.hiden is not an argument of trainer_recipes.mnist.model.MLP; "
                         "did you mean model.hidden?"),
    (["+model.hiden=64"], "did you mean model.hidden?"),
    (["data.batchsize=16"], "did you mean data.batch_size?"),
    (["callbacks.foo=1"], "callbacks.foo is not one of the run's callbacks (it has: "
                          "best_checkpoint); add one with +callbacks.foo._target_=your.Class"),
    (["callbacks=[default,early_stop]"], "unknown callbacks 'early_stop'; choose one of: "
                                         "adaptive_batch, best_checkpoint, default, "
                                         "early_stopping"),
    (["trainer.noise_scale=sometimes"], "trainer.noise_scale=sometimes is invalid"),
    (["trainer.precision=8"], "trainer.precision=8 is unknown"),
    (["optimizer.scale_lr=cubic"], "optimizer.scale_lr=cubic is invalid: use none, linear, "
                                   "sqrt or adascale"),
    (["optimizer.scale_lr=adascale", "trainer.accumulate=2"],
     "optimizer.scale_lr=adascale: data.batch_size=64 is smaller than "
     "optimizer.base_batch_size=256"),
    (["optimizer=adam", "optimizer.scale_lr=adascale", "optimizer.base_batch_size=16",
      "trainer.accumulate=2"], "optimizer.scale_lr=adascale is AdaScale SGD (SGD with or "
                               "without momentum); torch.optim.Adam adapts its steps itself"),
    (["optimizer=lars", "optimizer.scale_lr=adascale", "optimizer.base_batch_size=16",
      "trainer.accumulate=2"], "trainer.optim.LARS adapts its steps itself"),
    (["optimizer.scale_lr=adascale", "optimizer.base_batch_size=16", "trainer.accumulate=2",
      "schedule=increase_batch", "schedule.milestones=[5]"],
     "optimizer.scale_lr=adascale with schedule=increase_batch: AdaScale runs at one global "
     "batch"),
    (["data.batch_size=auto"], "optimizer.scale_lr=none is invalid: data.batch_size=auto sets "
                               "each step's learning rate with AdaScale"),
    (["data.batch_size=auto", "optimizer.scale_lr=adascale", "data.batch_size_min=256",
      "data.batch_size_max=128"],
     "data.batch_size_max=128 is invalid: it is below data.batch_size_min=256; raise it"),
    (["data.batch_size_max=512"], "data.batch_size_max=512 is invalid: it is for "
                                  "data.batch_size=auto (the batch chosen during training)"),
    (["data.batch_size=auto", "optimizer.scale_lr=adascale", "data.batch_plan=nope.json"],
     "data.batch_plan=nope.json: no such file; give the batch_plan.json of the run to replay"),
    (["data.batch_size=auto", "optimizer.scale_lr=adascale", "trainer.accumulate=2",
      "callbacks=[default,adaptive_batch]", "callbacks.adaptive_batch.threshold=-1"],
     "callbacks.adaptive_batch.threshold=-1: use a gain >= 0"),
    (["data.batch_size=0.5"], "data.batch_size=0.5 is invalid: use a positive integer, or auto"),
    (["data.max_micro_batch=16"], "data.max_micro_batch=16 is invalid: it is for "
                                  "data.batch_size=auto"),
    (["optimizer.scale_lr=adascale", "trainer.accumulate=2", "optimizer.base_batch_size=32",
      "callbacks=[default,adaptive_batch]"],
     "callbacks.adaptive_batch chooses the batch of data.batch_size=auto, and this run's is 64"),
    (["optimizer.adascale_decay=1"], "optimizer.adascale_decay=1.0 is invalid: use a number "
                                     "in [0, 1), or null"),
    (["schedule.warmup_steps=-1"], "schedule.warmup_steps and schedule.warmup_epochs must be"),
    (["schedule=step", "schedule.gamma=2"], "schedule.gamma=2.0 must be in (0, 1]"),
    (["noise=annealed", "noise.eta=-1"], "noise.eta=-1.0 must be > 0"),
    (["dist.threads_per_worker=0"], "dist.threads_per_worker=0 is invalid"),
    (["dist.timeout=0"], "dist.timeout=0 is invalid"),
    (["dist.compression=int8"], "dist.compression=int8 is invalid"),
    (["logger.sample_predictions=-1"], "logger.sample_predictions=-1 is invalid"),
    (["quant=qat", "quant.start_step=-1"], "quant.start_step=-1 must be >= 0"),
    (["trainer.dtype=float64", "quant=qat"], "trainer.dtype=float64 is invalid"),
    (["trainer.resume=/nonexistent/file.pt"], "the checkpoint file not found"),
    # Values that cannot be right (they used to train, exit 0).
    (["model.sync_bn=off"], "model.sync_bn=off is invalid: use true or false"),
    (["model.sync_bn=maybe"], "model.sync_bn=maybe is invalid: use true or false"),
    (["model.ghost_batch_size=-4"], "model.ghost_batch_size=-4 is invalid: use a number of "
                                    "samples >= 2 per ghost batch, or null for off"),
    (["model.ghost_batch_size=8"], "model.ghost_batch_size=8: MLP has no BatchNorm layer"),
    (["data.device=gpu"], "data.device=gpu is invalid: use auto, cpu or cuda[:N]"),
    (["data.device=cuda:99"], "data.device=cuda:99 but "),
    (["schedule=cosine", "schedule.min_factor=-1"],
     "Cosine refused its arguments (min_factor=-1.0: use a share of optimizer.lr in [0, 1])"),
    (["schedule=poly", "schedule.power=-1"], "Poly refused its arguments (power=-1.0: use a "
                                             "power > 0"),
    (["schedule.warmup_steps=1000"], "schedule.warmup_steps=1000 is not shorter than the run "
                                     "(400 steps, 20 epochs)"),
    (["schedule.warmup_epochs=30"], "schedule.warmup_epochs=30.0 (600 steps) is not shorter"),
    (["schedule=step", "schedule.milestones=[5,50]"],
     "schedule.milestones=[5,50]: epoch 50 is never reached in this run of 20 epochs"),
    (["schedule=increase_batch", "schedule.milestones=[20]"],
     "schedule.milestones=[20]: epoch 20 is never reached in this run of 20 epochs"),
    (["~trainer.epochs"], "~trainer.epochs: the framework's own keys cannot be removed; give "
                          "it a value instead (trainer.epochs=VALUE"),
    (["+callbacks=profiler"], "+callbacks=profiler: callbacks already has its options (`trainer "
                              "--cfg job` shows them); replace them with callbacks=profiler, or "
                              "add to them with callbacks=[default,profiler]"),
    (["+optimizer=adam"], "+optimizer=adam: optimizer already has an option; choose it with "
                          "optimizer=adam"),
    (["+callbacks.foo=3"], "callbacks.foo=3 is not an entry's config: give it a class "
                           "(+callbacks.foo._target_=your.Class) or remove it"),
    (["dist.find_unused_parameters=maybe"], "dist.find_unused_parameters: Value 'maybe' is not"),
]


def _trainer(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", "trainer", *SHRINK, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("row", range(len(CONFIG)), ids=[" ".join(a) for a, _ in CONFIG])
def test_bad_config(tmp_path, row):
    """The CLI's main() in this process (the message and what is written are tested, not the
    interpreter's start: test_a_bad_config_row_is_the_same_line_from_a_new_process is)."""
    args = CONFIG[row][0]
    if not any(a.startswith("hydra.run.dir") for a in args):
        args = [*args, f"hydra.run.dir={tmp_path}/run"]
    done = cli_in_process(*args, cwd=tmp_path)
    one_line_error(done, CONFIG[row][1], prefix="trainer: error: ")
    assert not list((tmp_path / "run").glob("checkpoints/step-*.pt"))


@pytest.mark.parametrize("row", [0, 8, 13, 17])  # a value, '=3', a key typo, Hydra's parser
def test_a_bad_config_row_is_the_same_line_from_a_new_process(tmp_path, row):
    args = [*CONFIG[row][0], f"hydra.run.dir={tmp_path}/run"]
    one_line_error(_trainer(*args, cwd=tmp_path), CONFIG[row][1], prefix="trainer: error: ")


def _asl(folder: Path, case: str) -> None:
    row = ",".join(["3"] + ["0"] * 784)
    header = ",".join(HEADER)
    for split in ("train", "test"):
        path = folder / f"sign_mnist_{split}.csv"
        if case == "786 columns":
            path.write_text(f"{header}\n{row},0\n{row},0\n")
        elif case == "latin-1 header":
            path.write_bytes(b"label,pix\xe9l1\n" + row.encode() + b"\n")
        elif case == "a directory":
            path.mkdir()
        elif case == "no rows":
            path.write_text(header + "\n")


def _headlines(folder: Path, case: str) -> None:
    path = folder / "ArticlesJan2017.csv"
    if case == "latin-1 byte":
        path.write_bytes(b"articleID,headline\n1,Caf\xe9 Society Opens\n2,Another Day\n")
    elif case == "unterminated quote":
        path.write_text('articleID,headline\n1,"Markets Rally Again\n2,Another Day Dawns\n')


def _mnist(folder: Path, case: str) -> None:
    from trainer_recipes.mnist.synthetic import write_fake_mnist

    write_fake_mnist(folder, n_train=64, n_test=16)
    if case == "empty test split":
        from trainer.data.idx import write_idx

        for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            shape = (0, 28, 28) if "images" in name else (0,)
            write_idx(folder / name, torch.zeros(shape, dtype=torch.uint8))
    elif case == "truncated":
        path = folder / "train-images-idx3-ubyte.gz"
        import gzip

        raw = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(raw[:-100]))


DATA = [
    ("recipe=asl_cnn", _asl, "786 columns", "rows have 786 values, the header names 785"),
    ("recipe=asl_cnn", _asl, "latin-1 header", "byte 9 of the header is not UTF-8 text"),
    ("recipe=asl_cnn", _asl, "a directory", "cannot read"),
    ("recipe=asl_cnn", _asl, "no rows", "has a header but no rows"),
    ("recipe=headlines", _headlines, "latin-1 byte", "is not UTF-8"),
    ("recipe=headlines", _headlines, "unterminated quote", "is not valid CSV"),
    ("recipe=mnist", _mnist, "empty test split", "holds no images; the test split is empty"),
    ("recipe=mnist", _mnist, "truncated", "is truncated or not the one named"),
]


@pytest.mark.parametrize("recipe,write,case,needle", DATA,
                         ids=[f"{r[0][7:]}: {r[2]}" for r in DATA])
def test_bad_data_file(tmp_path, recipe, write, case, needle):
    folder = tmp_path / "data"
    folder.mkdir()
    write(folder, case)
    done = cli_in_process(recipe, f"data.root={folder}", "trainer.max_steps=1",
                          f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    one_line_error(done, needle, prefix="trainer: error: ")
    if case not in ("a directory",):
        assert str(folder) in done.stderr  # the file is named


@pytest.mark.parametrize("recipe", [
    "defaults:\n  - override /model: mlp\ntrainer:\n  epochs: 1\n",  # Hydra: Could not override
    "trainer:\n  epochs: 1\n",  # Hydra: Key 'recipe' not in 'TrainConfig'
])
def test_a_recipe_without_the_global_package_line_is_named(tmp_path, recipe):
    (tmp_path / "conf" / "recipe").mkdir(parents=True)
    (tmp_path / "conf" / "recipe" / "mine.yaml").write_text(recipe)
    done = cli_in_process("--config-dir", str(tmp_path / "conf"), "recipe=mine",
                          f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    one_line_error(done, "recipe/mine.yaml puts its keys under recipe: instead of the whole "
                         "config: make its first line `# @package _global_`",
                   prefix="trainer: error: ")


def test_a_recipe_that_is_not_yaml_names_the_file_and_the_place(tmp_path):
    (tmp_path / "conf" / "recipe").mkdir(parents=True)
    recipe = tmp_path / "conf" / "recipe" / "mine.yaml"
    recipe.write_text("# @package _global_\ntrainer:\n  epochs: [1\n")
    done = cli_in_process("--config-dir", str(tmp_path / "conf"), "recipe=mine",
                          f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    one_line_error(done, f"{recipe}, line 4, column 1: not valid YAML (while parsing a flow "
                         "sequence; expected ',' or ']', but got '<stream end>'); fix that file",
                   prefix="trainer: error: ")


def test_a_config_package_shipped_without_its_yaml_is_the_likely_cause_named(tmp_path,
                                                                             monkeypatch):
    for folder in (tmp_path / "pkg" / "mine", tmp_path / "pkg" / "mine" / "conf"):
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")  # a wheel built without its package data
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    done = cli_in_process("hydra.searchpath=[pkg://mine.conf]", "recipe=mine",
                          f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    one_line_error(done, "unknown recipe 'mine'", prefix="trainer: error: ")
    assert "mine.conf holds no YAML files: was its package built without them?" in done.stderr


def test_a_search_path_package_that_does_not_import_is_one_line(tmp_path):
    done = cli_in_process("hydra.searchpath=[pkg://no_such_project.conf]",
                          f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    one_line_error(done, "hydra.searchpath: pkg://no_such_project.conf is not an importable "
                         "package; install the package that holds it", prefix="trainer: error: ")


def test_a_conf_folder_without_init_py_works_without_hydras_false_warning(tmp_path,
                                                                          monkeypatch):
    """Python imports a folder without __init__.py (a namespace package), and Hydra uses it,
    after warning that it "is not available"."""
    (tmp_path / "pkg" / "noinit" / "conf" / "recipe").mkdir(parents=True)
    (tmp_path / "pkg" / "noinit" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "noinit" / "conf" / "recipe" / "tiny.yaml").write_text(
        "# @package _global_\nmodel:\n  in_features: 64\ntrainer:\n  max_steps: 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    done = cli_in_process("hydra.searchpath=[pkg://noinit.conf]", "recipe=tiny",
                          f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "is not available" not in done.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 1
