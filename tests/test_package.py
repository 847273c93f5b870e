"""The framework as a user gets it: a wheel installed NON-editable into a fresh virtualenv,
used from an empty directory (no checkout on the path), together with an outside project
(examples/user_project) installed from its own wheel.

The fresh environment shares the test environment's dependencies (torch, hydra...) through a
``.pth`` file instead of installing 5 GB of torch again; trainer, trainer_recipes, the Hydra
plugin and the example come only from their wheels, which the first test checks.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from tests.helpers import EXACT, ROOT, SHARED_DATA, SHRINK, make_fake_mnist, max_difference, weights
from tests.helpers.user_project import FIT_SCRIPT, SHAPES

pytestmark = pytest.mark.slow
SOURCES = ("trainer", "trainer_recipes", "hydra_plugins", "pyproject.toml", "README.md")


def _build_wheel(source: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(out), str(source)], check=True,
                   capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict:
    """A new virtualenv holding the two wheels; an empty directory to work in."""
    base = tmp_path_factory.mktemp("package")
    copy = base / "src"
    for name in SOURCES:  # built from a clean copy: no build/ or egg-info in the checkout
        src = ROOT / name
        (shutil.copytree(src, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy2(src, copy / name))
    wheels = base / "wheels"
    _build_wheel(copy, wheels)
    example = base / "example"
    shutil.copytree(ROOT / "examples" / "user_project", example,
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    _build_wheel(example, wheels)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    fresh_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                 "['purelib'])"], capture_output=True, text=True,
                                check=True).stdout.strip()
    ours = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    Path(fresh_site, "_shared_dependencies.pth").write_text(
        "\n".join(dict.fromkeys(p for p in ours if Path(p).is_dir())) + "\n")
    found = sorted(str(w) for w in wheels.glob("*.whl"))
    assert len(found) == 2, found
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", *found],
                   check=True, capture_output=True, text=True)
    empty = base / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    return {"bin": venv / "bin", "py": str(py), "cwd": empty, "env": env, "wheels": found}


def _run(fresh: dict, *command: str, cwd: Path | None = None, timeout: float = 300):
    return subprocess.run(list(command), cwd=cwd or fresh["cwd"], env=fresh["env"],
                          capture_output=True, text=True, timeout=timeout)


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    return result.stdout


def test_the_wheels_hold_configs_plugin_and_launch_scripts_and_are_what_runs(fresh):
    import zipfile

    wheel = zipfile.ZipFile(next(w for w in fresh["wheels"] if "/trainer-" in w))
    names = set(wheel.namelist())
    # horovodrun runs the MPICH stand-in by name from PATH: it must stay executable.
    assert wheel.getinfo("trainer/launch/mpich/mpirun").external_attr >> 16 & 0o111
    for path in ("trainer/conf/train.yaml", "trainer/conf/optimizer/lamb.yaml",
                 "trainer/conf/hydra/launcher/trainer_slurm.yaml",
                 "trainer_recipes/conf/recipe/mnist.yaml", "trainer_recipes/conf/model/mlp.yaml",
                 "hydra_plugins/trainer_configs/__init__.py", "trainer/launch/torchrun.sh",
                 "trainer/launch/common.sh", "trainer/launch/slurm.sbatch"):
        assert path in names, path
    assert not any(n.startswith(("recipes/", "configs/", "tests/")) for n in names)
    where = _ok(_run(fresh, fresh["py"], "-c", "import trainer, trainer_recipes, shapes; "
                     "print(trainer.__file__, trainer_recipes.__file__, shapes.__file__)"))
    venv = str(fresh["bin"].parent)
    assert all(path.startswith(venv) for path in where.split()), where
    assert str(ROOT) not in where


def test_help_is_hydras_help_not_a_traceback(fresh):
    out = _ok(_run(fresh, str(fresh["bin"] / "trainer"), "--help"))
    assert "trainer: data-parallel training" in out and "recipe:" in out
    for command in ("trainer-report", "trainer-predict", "trainer-export", "trainer-generate",
                    "trainer-launch", "trainer-lr-find"):
        result = _run(fresh, str(fresh["bin"] / command), "--help")
        assert result.returncode == 0 and "usage:" in result.stdout + result.stderr, command
        assert "Traceback" not in result.stderr, (command, result.stderr[-2000:])


def test_default_job_from_an_empty_directory(fresh):
    _ok(_run(fresh, str(fresh["bin"] / "trainer"), "trainer.max_steps=5",
             "hydra.run.dir=default", *SHRINK))
    metrics = json.loads((fresh["cwd"] / "default" / "metrics.json").read_text())
    assert metrics["steps"] == 5 and metrics["test_accuracy"] is not None


def test_installed_lr_find_then_predict_a_digit_photo(fresh, tmp_path):
    """The new commands as a user runs them from the wheel: the lr range test, then a run at
    its suggestion, then trainer-predict on a digit photo (its best.pt)."""
    from tests.helpers.images import write_digit_photo
    from trainer_recipes.mnist.data import DigitsData

    out = _ok(_run(fresh, str(fresh["bin"] / "trainer-lr-find"), "--steps", "40", "--out",
                   "find", *SHRINK))
    assert (fresh["cwd"] / "find" / "lr_find.png").exists()
    train_with = next(ln for ln in out.splitlines() if ln.startswith("train with: "))
    _ok(_run(fresh, str(fresh["bin"] / "trainer"), train_with.rsplit(" ", 1)[1],
             "trainer.epochs=3", "hydra.run.dir=digits", *SHRINK))
    assert (fresh["cwd"] / "digits" / "checkpoints" / "best.pt").exists()
    test = DigitsData().test
    photo = write_digit_photo(test.inputs[0], 16, tmp_path / "digit.png")
    said = _ok(_run(fresh, str(fresh["bin"] / "trainer-predict"), "digits", str(photo)))
    assert said.startswith(f"{photo}: ") and said.split(": ")[1][0].isdigit()


def test_mnist_job_from_an_empty_directory(fresh, tmp_path):
    real = SHARED_DATA / "mnist"
    root = real if (real / "train-images-idx3-ubyte.gz").exists() else make_fake_mnist(
        tmp_path / "mnist")
    out = _ok(_run(fresh, str(fresh["bin"] / "trainer"), "recipe=mnist", f"data.root={root}",
                   "data.download=false", "trainer.max_steps=20", "hydra.run.dir=mnist",
                   *SHRINK))
    assert "MNIST (LeCun IDX files)" in out
    assert json.loads((fresh["cwd"] / "mnist" / "metrics.json").read_text())["steps"] == 20


def test_a_folder_with_its_own_recipes_package_does_not_shadow_the_framework(fresh, tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "__init__.py").write_text("raise ImportError('the user\\'s own')\n")
    _ok(_run(fresh, fresh["py"], "-m", "trainer", "trainer.max_steps=2", "hydra.run.dir=r",
             *SHRINK, cwd=tmp_path))
    _ok(_run(fresh, fresh["py"], "-m", "torch.distributed.run", "--standalone",
             "--nproc-per-node=2", "-m", "trainer", "trainer.max_steps=2", "hydra.run.dir=r2",
             *SHRINK, cwd=tmp_path))


def test_installed_user_project_on_one_and_two_workers_and_through_fit(fresh):
    searchpath = "hydra.searchpath=[pkg://shapes.conf]"
    trainer = str(fresh["bin"] / "trainer")
    _ok(_run(fresh, trainer, searchpath, *SHAPES, "hydra.run.dir=shapes1", *SHRINK))
    # trainer-launch runs the packaged torchrun.sh with this environment's interpreter.
    _ok(_run(fresh, str(fresh["bin"] / "trainer-launch"), "torchrun", "2", searchpath, *SHAPES,
             "hydra.run.dir=shapes2", *SHRINK))
    one, two = weights(fresh["cwd"] / "shapes1"), weights(fresh["cwd"] / "shapes2")
    assert max_difference(one, two) < EXACT
    assert (fresh["cwd"] / "shapes1" / "best.json").exists()  # the project's callback
    # The checkpoint at work from the wheel: trainer-evaluate on 1 and 2 workers.
    evaluate = ("shapes1", "--last", "--trust", "shapes", "--output")
    _ok(_run(fresh, str(fresh["bin"] / "trainer-evaluate"), *evaluate, "e1.json"))
    _ok(_run(fresh, fresh["py"], "-m", "torch.distributed.run", "--standalone",
             "--nproc-per-node=2", "-m", "trainer.tools.evaluate", *evaluate, "e2.json"))
    trained = json.loads((fresh["cwd"] / "shapes1" / "metrics.json").read_text())
    e1, e2 = (json.loads((fresh["cwd"] / f"e{n}.json").read_text()) for n in (1, 2))
    assert abs(e1["test_accuracy"] - trained["test_accuracy"]) < 1e-12
    assert set(e1) == set(e2) and all(abs(e1[k] - e2[k]) < 1e-12 for k in e1)
    # docs/extending.md's predict line as written: a row per test sample, in a CSV.
    _ok(_run(fresh, str(fresh["bin"] / "trainer-predict"), "shapes1", "--trust", "shapes",
             "--output", "preds.csv"))
    rows = (fresh["cwd"] / "preds.csv").read_text().splitlines()
    assert rows[0].startswith("index,prediction") and len(rows) > 1
    script = fresh["cwd"] / "fit_script.py"
    script.write_text(FIT_SCRIPT)
    out = _ok(_run(fresh, fresh["py"], str(script), str(fresh["cwd"] / "fit")))
    assert max_difference(one, weights(fresh["cwd"] / "fit")) < EXACT
    # The project's own model transform and gradient hook, from the installed wheels.
    result = json.loads(out.split("RESULT", 1)[1].splitlines()[0])
    assert abs(result["hooked_loss"] - math.log(2)) < 1e-12 and result["clipped"] == 1
    # Dict batches, two inputs and outputs, the project's own task: through fit and config.
    assert 0 < result["center_mse"] < 0.2
    # trainer.evaluate and trainer.predict from Python, on fit's last checkpoint.
    assert abs(result["evaluated"] - result["acc"]) < 1e-12
    assert abs(result["predicted"] - result["acc"]) < 1e-12
    # ... with the project's transform, gradient hook and log output chosen by config too.
    _ok(_run(fresh, trainer, searchpath, "recipe=shapes_locate", "trainer.max_steps=8",
             "+transforms.zero_head._target_=shapes.transforms.ZeroInitHead",
             "+callbacks.clip._target_=shapes.callbacks.ClipGradNorm",
             "+callbacks.clip.max_norm=0.05",
             "+logger.outputs.jsonl._target_=shapes.outputs.JsonLines",
             "hydra.run.dir=located", *SHRINK))
    located = json.loads((fresh["cwd"] / "located" / "metrics.json").read_text())
    # (8 float32 steps clipped to norm 0.05: how far it gets varies by CPU; fit's run above
    # shows the task learns.)
    assert math.isfinite(located["test_center_mse"]) and "test_accuracy" in located
    logged = [json.loads(ln) for ln in
              (fresh["cwd"] / "located" / "log.jsonl").read_text().splitlines()]
    assert logged[-1]["metrics"]["hparam/test_center_mse"] == located["test_center_mse"]
    saved = torch.load(fresh["cwd"] / "located" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["config"]["callbacks"]["clip"]["_target_"] == "shapes.callbacks.ClipGradNorm"
    assert saved["config"]["transforms"]["zero_head"]["_target_"] == \
        "shapes.transforms.ZeroInitHead"
    saved = torch.load(fresh["cwd"] / "shapes2" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["config"]["trainer"]["dtype"] == "float64"


def test_launch_path_points_into_the_installed_package(fresh):
    path = Path(_ok(_run(fresh, str(fresh["bin"] / "trainer-launch"), "--path")).strip())
    assert str(path).startswith(str(fresh["bin"].parent)) and (path / "torchrun.sh").is_file()
