"""Gradient clipping: the rule itself, and the same clipped run on 1 worker, 2 torchrun workers,
2 Horovod workers and with accumulation (float64, to 1e-9)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import EQUIVALENCE, EXACT, ROOT, SHRINK, max_difference, run, run_cli, weights
from tests.helpers.errors import one_line_error
from trainer.optim.clip import GradClip

# The equivalence run (digits MLP, per-sample dropout, 50 steps, float64) with a norm limit
# its gradients exceed at most steps: clipping is active.
CLIPPED = (*EQUIVALENCE, "trainer.clip_grad_norm=0.3", "trainer.log_every=10")


def _params(*grads: list[float]) -> list[torch.nn.Parameter]:
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(len(g), dtype=torch.float64))
        p.grad = torch.tensor(g, dtype=torch.float64)
        params.append(p)
    return params


def test_norm_clipping_rescales_all_gradients_together():
    params = _params([3.0, 0.0], [0.0, 4.0])  # global norm 5
    norm = GradClip(max_norm=1.0)(params)
    assert float(norm) == 5.0  # returned (and logged) before clipping
    assert torch.allclose(torch.cat([p.grad for p in params]),
                          torch.tensor([0.6, 0.0, 0.0, 0.8], dtype=torch.float64), atol=1e-6)


def test_gradients_under_the_limit_are_untouched_and_frozen_ones_are_skipped():
    params = _params([0.3, 0.4])
    frozen = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))  # grad None
    clip = GradClip(max_norm=1.0)
    clip([*params, frozen])
    assert params[0].grad.tolist() == [0.3, 0.4] and frozen.grad is None
    mean, clipped = clip.take()
    assert mean == pytest.approx(0.5) and clipped == 0.0 and clip.take() is None


def test_value_clipping_clamps_each_element_before_the_norm():
    params = _params([3.0, -0.5, -7.0])
    GradClip(max_value=1.0)(params)
    assert params[0].grad.tolist() == [1.0, -0.5, -1.0]
    both = _params([3.0, 4.0])
    GradClip(max_norm=1.0, max_value=1.0)(both)  # [1, 1], then norm sqrt(2) -> 1
    assert torch.allclose(both[0].grad, torch.full((2,), 2 ** -0.5, dtype=torch.float64))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_limits_are_refused(bad):
    with pytest.raises(ValueError, match="Invalid max_norm"):
        GradClip(max_norm=bad)


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    done = run("none", 1, *CLIPPED, f"hydra.run.dir={folder}/run", cwd=folder)
    return weights(folder / "run"), done.stdout + done.stderr, folder / "run"


def test_clipping_changes_the_run_and_is_logged(tmp_path, one_worker):
    clipped, output, run_dir = one_worker
    run("none", 1, *EQUIVALENCE, f"hydra.run.dir={tmp_path}/plain", cwd=tmp_path)
    assert max_difference(clipped, weights(tmp_path / "plain")) > 1e-3
    assert "% clipped)" in output
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    norms = [e.value for e in events.Scalars("train/grad_norm")]
    clipped_share = [e.value for e in events.Scalars("train/grad_clipped")]
    assert len(norms) == 5 and all(n > 0 for n in norms)  # every 10 of 50 steps
    assert max(clipped_share) > 0  # the limit was reached: the test exercises clipping


@pytest.mark.parametrize("launcher,extra", [
    ("torchrun", ()),
    ("none", ("trainer.accumulate=2",)),
])
def test_clipped_runs_agree_across_workers_and_accumulation(tmp_path, one_worker, launcher,
                                                            extra):
    run(launcher, 2 if launcher == "torchrun" else 1, *CLIPPED, *extra,
        f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert max_difference(one_worker[0], weights(tmp_path / "r")) < EXACT


@pytest.mark.skipif(importlib.util.find_spec("horovod") is None, reason="Horovod not installed")
def test_clipped_horovod_run_agrees_with_one_worker(tmp_path, one_worker):
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        ["bash", str(ROOT / "launch" / "horovodrun.sh"), "2", *CLIPPED, *SHRINK,
         f"hydra.run.dir={tmp_path}/r"], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": sys.executable},
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert max_difference(one_worker[0], weights(tmp_path / "r")) < EXACT


def test_a_bad_limit_is_one_line(tmp_path):
    one_line_error(run_cli("trainer.clip_grad_norm=0", cwd=tmp_path),
                   "trainer.clip_grad_norm=0", "positive number")
