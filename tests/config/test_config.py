"""The config tree: composition, typed schemas, recipes as deltas, the _target_ allow-list."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import ROOT, compose_config, run_cli
from trainer.config.instantiate import check_target, safe_instantiate
from trainer.engine.build import build_model
from trainer.errors import UserError
from trainer.parallel.backends import Backend

RECIPES = sorted(p.stem for p in (ROOT / "trainer_recipes" / "conf" / "recipe").glob("*.yaml"))


def test_default_is_the_offline_digits_recipe():
    cfg = compose_config()
    assert cfg.data._target_ == "trainer_recipes.mnist.data.DigitsData"
    assert cfg.model.in_features == 64
    assert "NOT MNIST" in cfg.description or "not MNIST" in cfg.description


def test_mnist_recipe_overrides_only_its_deltas():
    cfg = compose_config("recipe=mnist")
    assert cfg.data._target_ == "trainer_recipes.mnist.data.MNISTData"
    assert cfg.model.in_features == 784 and list(cfg.model.hidden) == [512, 512]
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.momentum == 0.9
    # Keys the recipe does not mention keep the group defaults.
    assert cfg.trainer.keep_last == 3 and cfg.dist.backend == "auto"


def test_swapping_the_optimizer_of_a_recipe_takes_that_optimizers_defaults():
    cfg = compose_config("recipe=mnist", "optimizer=adam")
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 0.001
    assert "momentum" not in cfg.optimizer


def test_data_root_follows_trainer_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINER_DATA_DIR", str(tmp_path))
    cfg = compose_config("recipe=mnist")
    assert cfg.data.root == f"{tmp_path}/mnist"


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_composes(recipe):
    cfg = compose_config(f"recipe={recipe}")
    OmegaConf.resolve(cfg)
    assert cfg.data.batch_size > 0 and cfg.description


@pytest.mark.parametrize("name,cls", [("sgd", "SGD"), ("adam", "Adam"), ("rmsprop", "RMSprop")])
def test_optimizer_choices(name, cls):
    cfg = compose_config(f"optimizer={name}", "optimizer.lr=0.01")
    assert cfg.optimizer._target_ == f"torch.optim.{cls}" and cfg.optimizer.lr == 0.01


@pytest.mark.parametrize(
    "override,key",
    [
        ("trainer.epochz=3", "epochz"),
        ("optimizer.lrr=0.1", "lrr"),
        ("optimizer=adam optimizer.momentum=0.9", "momentum"),  # Adam has no momentum
        ("data.batch_sise=3", "batch_sise"),
    ],
)
def test_misspelt_key_fails_naming_it(override, key):
    with pytest.raises(Exception) as info:  # Hydra wraps OmegaConf's error
        compose_config(*override.split())
    assert key in str(info.value)


def test_wrong_type_fails_naming_the_key(tmp_path):
    result = run_cli("trainer.epochs=many", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode != 0
    assert (
        "trainer.epochs" in result.stderr and "could not be converted to Integer" in result.stderr
    )


def test_cli_misspelt_key_exits_nonzero_naming_key(tmp_path):
    result = run_cli("trainer.epochz=3", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode != 0
    assert "epochz" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "torch.load"])
def test_functions_are_refused_on_the_training_path(target):
    # The run's own config may name any class (the user's code); it builds objects, so a
    # function is refused. A checkpoint's stored config is checked far more strictly
    # (tests/config/test_trust.py).
    with pytest.raises(UserError, match="only classes"):
        check_target(target, "model")


def test_any_importable_class_is_allowed_on_the_training_path():
    from collections import OrderedDict

    assert check_target("collections.OrderedDict", "model") is OrderedDict


def test_nested_targets_are_checked_before_anything_is_built():
    node = OmegaConf.create(
        {"_target_": "torch.nn.Sequential", "_args_": [{"_target_": "os.system"}]}
    )
    with pytest.raises(UserError, match="os.system is refused"):
        safe_instantiate(node, "model")


def test_allowed_target_instantiates():
    model = build_model(compose_config().model, Backend(torch.device("cpu")))
    assert sum(p.numel() for p in model.parameters()) == 64 * 512 + 512 + 512 * 512 + 512 + 5130


def test_configs_ship_inside_the_packages():
    import trainer.conf
    import trainer_recipes.conf

    assert (Path(trainer.conf.__file__).parent / "train.yaml").is_file()
    assert (Path(trainer_recipes.conf.__file__).parent / "recipe" / "mnist.yaml").is_file()
