"""The Dockerfile: no Docker engine runs here, so it is linted, and its install steps are
checked against the README's (the same pins, extras and Horovod script)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, compose_config

DOCKERFILE = (ROOT / "Dockerfile").read_text()
README = (ROOT / "README.md").read_text()


def _extras(text: str) -> set[str]:
    return {e for match in re.findall(r"'[^'\s]*\[([a-z,]+)\]'", text) for e in match.split(",")}


def test_hadolint_finds_nothing():
    beside = Path(sys.executable).parent / "hadolint"  # the virtualenv's, when not activated
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]')")
    result = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"),
                             str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_install_steps_match_the_readme():
    test_command = next(line for line in README.splitlines() if "pytest" in line
                        and "pip install" in line)
    for pin in re.findall(r"torch(?:vision)?==[\d.]+", test_command):
        assert pin in DOCKERFILE, f"{pin} from the README is not what the Dockerfile installs"
    assert "trainer-launch install-horovod" in DOCKERFILE  # the packaged install_horovod.sh
    assert " -e " not in DOCKERFILE  # a package, not an editable checkout
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in DOCKERFILE  # GPU collectives in the image
    docker = _extras(DOCKERFILE)
    assert {"mpi", "qat"} <= docker <= _extras(test_command)


def test_the_image_runs_as_a_non_root_user_and_trains_mnist():
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    cmd = re.search(r'^CMD \["trainer", (.*)\]$', DOCKERFILE, flags=re.M)
    overrides = [a.strip().strip('"') for a in cmd.group(1).split(",")]
    assert compose_config(*overrides).data._target_ == "trainer_recipes.mnist.data.MNISTData"
