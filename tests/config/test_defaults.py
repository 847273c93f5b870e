"""Defaults live in one place: the closed groups' in their schema dataclass, a built-in
option's in its class's signature (its YAML holds only what it chooses differently)."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from hydra.utils import get_class

from tests.helpers import ROOT, compose_config
from trainer.config import schema
from trainer.config.from_signature import schema_from_signature
from trainer.errors import UserError

CONF = ROOT / "trainer" / "conf"
OPTIONS = sorted(p.relative_to(CONF) for g in ("optimizer", "schedule", "noise")
                 for p in (CONF / g).glob("*.yaml"))


def _keys(path: Path) -> dict:
    return {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "defaults"}


@pytest.mark.parametrize("group", ["trainer", "dist", "logger"])
def test_closed_groups_set_no_key_in_yaml(group):
    # A logger option is a set of log outputs: it may add entries to logger.outputs (their
    # _target_s), never a key with a default of its own.
    chosen = {"logger": {"outputs"}}.get(group, set())
    assert all(set(_keys(p)) <= chosen for p in (CONF / group).glob("*.yaml"))
    assert _keys(CONF / group / "default.yaml") == {}


def test_quant_options_set_only_their_mode():
    assert {p.stem: _keys(p) for p in (CONF / "quant").glob("*.yaml")} == {
        "none": {"mode": "none"}, "qat": {"mode": "qat"}, "ptq": {"mode": "ptq"}}


@pytest.mark.parametrize("option", OPTIONS, ids=str)
def test_a_built_in_option_repeats_no_default_of_its_class(option):
    keys = _keys(CONF / option)
    cls = get_class(keys.pop("_target_"))
    keys.pop("lr", None)  # every optimizer option states its lr, the key people tune
    signature = inspect.signature(cls.__init__).parameters
    framework = {f.name: f.default for f in fields(schema.OptimizerKeys)}
    for key, value in keys.items():
        default = signature[key].default if key in signature else framework[key]
        assert value != default, f"{option}: {key}={value} repeats the default"


def test_the_composed_option_takes_the_classs_defaults():
    from trainer.optim import LAMB

    cfg = compose_config("optimizer=lamb").optimizer
    defaults = inspect.signature(LAMB.__init__).parameters
    assert cfg.eps == defaults["eps"].default and list(cfg.betas) == list(defaults["betas"].default)
    assert cfg.weight_decay == 0.01 != defaults["weight_decay"].default  # the option's choice
    # Every class argument is in the composed config, so an override needs no '+'.
    assert compose_config("optimizer=sgd", "optimizer.nesterov=true").optimizer.nesterov is True
    assert compose_config("schedule=cosine", "schedule.warmup_steps=5").schedule.warmup_steps == 5


def test_the_generated_schema_types_plain_arguments():
    with pytest.raises(Exception, match="optimizer.lr=abc"):
        compose_config("optimizer.lr=abc")  # Union[float, Tensor]: a config can give the float
    with pytest.raises(Exception, match="momentum"):
        compose_config("optimizer=sgd", "optimizer.momentum=fast")


def test_schema_from_signature_fields():
    class Net:
        def __init__(self, width: int, rate: float = 0.5, name: str | None = None,
                     sizes: tuple = (1, 2), **rest) -> None:
            pass

    made = {f.name: f for f in fields(schema_from_signature(Net, extra={"flag": (bool, True)}))}
    assert list(made) == ["_target_", "width", "rate", "name", "sizes", "flag"]
    assert made["width"].default == "???" and made["rate"].default == 0.5
    assert made["sizes"].default_factory() == [1, 2] and made["flag"].default is True


def test_a_users_optimizer_needs_no_schema():
    cfg = compose_config("optimizer=adam", "optimizer._target_=torch.optim.AdamW",
                         "+optimizer.maximize=true")
    assert cfg.optimizer.maximize is True
    from trainer.config.validate import check_keys

    check_keys(cfg)
    with pytest.raises(UserError, match="optimizer.amsgrd is not an argument of torch.optim.Adam"):
        check_keys(compose_config("optimizer=adam", "+optimizer.amsgrd=1"))
