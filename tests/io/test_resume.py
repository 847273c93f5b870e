"""Exact resume: a SIGKILLed run, restarted, ends bit-identical to an unbroken one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import PACED, ROOT, SHRINK, cli_in_process, make_fake_mnist, run_cli

# Dropout on, so the restored RNG state matters; mid-epoch checkpoints, so the position
# inside the epoch matters; momentum, so the optimizer state matters. The processes that are
# killed are paced (tests/helpers/signals.py: the kill lands within a few steps of where it is
# aimed); the reference and the resumed runs, whose process is not what is tested, run in
# this process.
EPOCHS = 3
ARGS = (
    "recipe=mnist",
    "data.download=false",
    "data.batch_size=20",
    f"trainer.epochs={EPOCHS}",
    "model.dropout=0.2",
    "trainer.checkpoint_every=7",
    "trainer.keep_last=2",
    "trainer.eval_every=100",
    "trainer.log_every=10",
    "logger.sample_predictions=0",
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_fake_mnist(tmp_path_factory.mktemp("resume") / "mnist", n_train=3000, n_test=100)


def _start(run_dir: Path, root: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainer",
            *ARGS,
            f"data.root={root}",
            f"hydra.run.dir={run_dir}",
            *PACED,
            *extra,
            *SHRINK,
        ],
        cwd=run_dir.parent,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_after_step(proc: subprocess.Popen, run_dir: Path, step: int) -> int:
    """SIGKILL ``proc`` as soon as a checkpoint at or past ``step`` exists; return that step."""
    deadline = time.monotonic() + 120
    folder = run_dir / "checkpoints"
    while time.monotonic() < deadline:
        steps = (
            [int(p.stem.split("-")[1]) for p in folder.glob("step-*.pt")] if folder.exists() else []
        )
        if steps and max(steps) >= step:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return max(steps)
        if proc.poll() is not None:
            pytest.fail(f"run ended before step {step}: {proc.stderr.read()}")
        time.sleep(0.002)
    proc.kill()
    pytest.fail("no checkpoint appeared in time")


def _final(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def _assert_bit_identical(a: dict, b: dict) -> None:
    # 3,000 images less the 250 (1/12) held out for validation, at batch 20.
    assert a["progress"]["step"] == b["progress"]["step"] == EPOCHS * (2750 // 20)
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for key, buf in a["optimizer"]["state"].items():
        assert torch.equal(buf["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root) -> dict:
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    result = cli_in_process(
        *ARGS, f"data.root={data_root}", f"hydra.run.dir={run_dir}", cwd=run_dir.parent
    )
    assert result.returncode == 0, result.stderr
    return _final(run_dir)


def test_sigkill_twice_then_resume_auto_is_bit_identical(tmp_path, data_root, reference):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    killed_at = _kill_after_step(_start(run_dir, data_root), run_dir, 40)
    assert not (run_dir / "metrics.json").exists()
    second = _kill_after_step(_start(run_dir, data_root), run_dir, killed_at + 150)
    assert second > killed_at
    result = cli_in_process(*ARGS, f"data.root={data_root}", f"hydra.run.dir={run_dir}",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stdout
    _assert_bit_identical(reference, _final(run_dir))
    assert json.loads((run_dir / "metrics.json").read_text())["resumed_from"]


def test_corrupt_newest_checkpoint_falls_back_and_still_matches(tmp_path, data_root, reference):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _kill_after_step(_start(run_dir, data_root), run_dir, 60)
    newest = (run_dir / "checkpoints" / "last.pt").resolve()
    newest.write_bytes(newest.read_bytes()[:1000])  # a torn write
    # (A process: what is tested includes the warning on its stderr.)
    result = run_cli(*ARGS, f"data.root={data_root}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(newest) in result.stderr and "resuming from" in result.stderr
    _assert_bit_identical(reference, _final(run_dir))


def test_resume_from_an_explicit_file_into_a_new_directory(tmp_path, data_root, reference):
    first = tmp_path / "first"
    first.mkdir()
    _kill_after_step(_start(first, data_root), first, 30)
    checkpoint = (first / "checkpoints" / "last.pt").resolve()
    result = cli_in_process(
        *ARGS,
        f"data.root={data_root}",
        f"hydra.run.dir={tmp_path}/second",
        f"trainer.resume={checkpoint}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    _assert_bit_identical(reference, _final(tmp_path / "second"))
    assert os.path.exists(checkpoint)  # the source run's files are left alone
