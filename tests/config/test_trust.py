"""A checkpoint's stored config cannot run code: every ``_target_`` in it, at any depth, must
resolve to a trusted class before anything is built (trainer-predict, -generate, -export)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import train_in_process
from trainer.config.instantiate import check_stored_config
from trainer.errors import UserError

# Spellings that passed the old first-word allow-list and ran `touch` from a checkpoint.
BYPASSES = (
    "trainer.parallel.backends.rendezvous.subprocess.Popen",
    "torch.utils.cpp_extension.subprocess.Popen",
    "torch.distributed.elastic.multiprocessing.subprocess_handler.SubprocessHandler",
)


def _payload(target: str, marker: Path) -> dict:
    if target.endswith("SubprocessHandler"):
        return {"_target_": target, "entrypoint": "touch", "args": [str(marker)], "env": {},
                "stdout": None, "stderr": None, "local_rank_id": 0}
    return {"_target_": target, "args": ["touch", str(marker)]}


def _placements(payload: dict) -> dict[str, callable]:
    """Where a payload can hide in a stored config."""
    return {
        "model": lambda c: c.update(model=payload),
        "nested": lambda c: c.update(model={"_target_": "torch.nn.Identity", "x": payload}),
        "list": lambda c: c.update(model={"_target_": "torch.nn.Sequential",
                                          "_args_": [{"_target_": "torch.nn.Identity"},
                                                     payload]}),
        "data": lambda c: c["data"].update(payload),
    }


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("ckpt")
    train_in_process(folder, "trainer.max_steps=2", "logger.tensorboard=false")
    return torch.load(folder / "checkpoints" / "last.pt", weights_only=True)


def _tampered(state: dict, target: str, where: str, marker: Path, out: Path) -> Path:
    import copy

    evil = copy.deepcopy(state)
    _placements(_payload(target, marker))[where](evil["config"])
    torch.save(evil, out)
    return out


@pytest.mark.parametrize("target", BYPASSES)
@pytest.mark.parametrize("where", ["model", "nested", "list", "data"])
def test_every_bypass_is_refused_wherever_it_hides(checkpoint, tmp_path, target, where):
    marker = tmp_path / "pwned"
    config = _tampered(checkpoint, target, where, marker, tmp_path / "x.pt")
    state = torch.load(config, weights_only=True)  # the checkpoint itself loads as data
    with pytest.raises(UserError, match=rf"_target_={target} is refused: it is "):
        check_stored_config(state["config"], "checkpoint x.pt")
    assert not marker.exists()


def test_a_class_outside_the_trusted_packages_is_not_even_imported(checkpoint):
    config = {**checkpoint["config"], "model": {"_target_": "antigravity.Nothing"}}
    with pytest.raises(UserError, match=r"antigravity.Nothing is not trusted.*--trust antigravity"):
        check_stored_config(config, "checkpoint x.pt")
    assert "antigravity" not in sys.modules  # importing it would have opened a browser


def test_the_shipped_recipes_checkpoints_are_trusted(checkpoint):
    check_stored_config(checkpoint["config"], "checkpoint x.pt")  # no error


def test_a_checkpoint_from_before_the_recipes_rename_still_loads(checkpoint, tmp_path):
    """Checkpoints written when the recipes were the top-level ``recipes`` package name
    ``recipes.mnist...``: the commands read them as ``trainer_recipes...`` and trust them."""
    import copy

    from trainer.engine.inference import load_trusted

    old = copy.deepcopy(checkpoint)
    for group in ("model", "data"):
        target = old["config"][group]["_target_"]
        old["config"][group]["_target_"] = target.replace("trainer_recipes.", "recipes.", 1)
    assert old["config"]["model"]["_target_"] == "recipes.mnist.model.MLP"
    torch.save(old, tmp_path / "old.pt")
    _, state = load_trusted(tmp_path / "old.pt")
    assert state["config"]["model"]["_target_"] == "trainer_recipes.mnist.model.MLP"
    assert state["config"]["data"]["_target_"] == "trainer_recipes.mnist.data.DigitsData"


@pytest.mark.parametrize("old,new", [
    ("trainer.schedule.Cosine", "trainer.optim.schedule.Cosine"),
    ("trainer.grad_noise.Annealed", "trainer.large_batch.grad_noise.Annealed"),
])
def test_a_checkpoint_from_before_the_framework_was_grouped_still_loads(old, new):
    """The flat modules moved into folders by concern; a stored config naming the old path
    is read with the new one, and passes the trust check."""
    from trainer.config.instantiate import check_stored_config, upgrade_stored_config

    stored = upgrade_stored_config({"schedule": {"_target_": old}, "noise": [{"_target_": old}]})
    assert stored == {"schedule": {"_target_": new}, "noise": [{"_target_": new}]}
    check_stored_config(stored, "checkpoint x.pt")


def _cli(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("module,args", [
    ("trainer.tools.predict", ["image.png"]),
    ("trainer_recipes.headlines.generate", ["the"]),
    ("trainer.tools.export", ["quant=ptq"]),
], ids=["trainer-predict", "trainer-generate", "trainer-export"])
def test_the_commands_refuse_a_tampered_checkpoint_with_one_line(checkpoint, tmp_path, module,
                                                                 args):
    marker = tmp_path / "pwned"
    path = _tampered(checkpoint, BYPASSES[2], "nested", marker, tmp_path / "evil.pt")
    result = _cli(module, str(path), *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert not marker.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SubprocessHandler is refused: it is " in lines[0]


def test_a_users_own_model_trains_and_its_checkpoint_exports_once_trusted(tmp_path):
    package = tmp_path / "src" / "mypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text(
        "from trainer_recipes.mnist.model import MLP\n\n\nclass Net(MLP):\n    pass\n")
    env = {"PYTHONPATH": f"{tmp_path / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run_dir = tmp_path / "run"
    trained = _cli("trainer", "model._target_=mypkg.model.Net", "trainer.max_steps=3",
                   "logger.progress_bar=false", f"hydra.run.dir={run_dir}", env=env)
    assert trained.returncode == 0, trained.stderr[-2000:]  # the training path runs user code
    export = ("quant=ptq", "quant.calibration_batches=1", "quant.latency_repeats=1",
              "--out", str(tmp_path / "int8"))
    refused = _cli("trainer.tools.export", str(run_dir), *export, env=env)
    assert refused.returncode == 2
    assert "mypkg.model.Net is not trusted" in refused.stderr
    assert "add --trust mypkg (or set TRAINER_TRUSTED_PACKAGES=mypkg)" in refused.stderr
    exported = _cli("trainer.tools.export", str(run_dir), *export, "--trust", "mypkg", env=env)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (tmp_path / "int8" / "model_int8.pt2").is_file()
