"""AdaScale (optimizer.scale_lr=adascale): the gain estimator against known gradient noise and
the closed form of a linear-regression problem, the learning rate and the run's length it
drives, and an exact resume."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    EQUIVALENCE,
    EXACT,
    FROZEN,
    ROOT,
    SHRINK,
    max_difference,
    run,
    train_in_process,
    weights,
)
from trainer.large_batch.adascale import AdaScale, default_decay


def _true_gain(b_simple: float, base: int, big: int) -> float:
    return (1 + b_simple / base) / (1 + b_simple / big)


def _steps(adascale: AdaScale, gen: torch.Generator, steps: int, g: float, sigma: float = 2.0,
           dim: int = 256, b: int = 64, k: int = 8) -> list[float]:
    """k micro-batch gradients of batch b per step at a known G and per-sample covariance
    sigma^2 I; the gains each step used."""
    true_g = torch.full((dim,), g, dtype=torch.float64)
    gains = []
    for _ in range(steps):
        small = true_g + sigma * torch.randn(k, dim, generator=gen, dtype=torch.float64) / b**0.5
        adascale.observe([float(small.square().sum(1).mean())],
                         [float(small.mean(0).square().sum())], b)
        gains.append(adascale.gain)
        adascale.advance()
    return gains


def _fixed(adascale: AdaScale, micro: torch.Tensor, steps: int = 20) -> float:
    """The same k micro-batch gradients (rows of ``micro``) every step; the last gain."""
    b = adascale.global_batch // len(micro)
    for _ in range(steps):
        adascale.observe([float(micro.square().sum(1).mean())],
                         [float(micro.mean(0).square().sum())], b)
        adascale.advance()
    return adascale.gain


def test_identical_micro_batch_gradients_give_a_gain_of_one():
    # No noise at all: a batch S times larger is worth one base step.
    micro = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64).repeat(4, 1)
    assert _fixed(AdaScale(64, 256, 1), micro) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_k_orthogonal_micro_batch_gradients_of_equal_norm_give_a_gain_of_k(k):
    # All noise (their mean is as small as k independent draws' would be): worth k steps.
    micro = 3.0 * torch.eye(k, dtype=torch.float64)
    assert _fixed(AdaScale(32, 32 * k, 1), micro) == pytest.approx(k, abs=1e-9)


def test_the_gain_recovers_the_papers_ratio_from_known_gradient_noise():
    adascale = AdaScale(base_batch=64, global_batch=512, groups=1, decay=0.99)
    gains = _steps(adascale, torch.Generator().manual_seed(0), 1500, g=0.1)
    b_simple = 256 * 2.0**2 / (256 * 0.1**2)  # tr(Sigma) / |G|^2 = 400
    expected = _true_gain(b_simple, 64, 512)  # (1 + 400/64) / (1 + 400/512) = 4.07
    assert gains[0] == 1.0  # nothing measured yet: plain SGD at the base rate
    assert all(1.0 <= gain <= 8.0 for gain in gains)
    assert sum(gains[-500:]) / 500 == pytest.approx(expected, rel=0.05)
    # tau advanced by every step's gain, in base-batch steps.
    assert adascale.progress == pytest.approx(sum(gains))


def test_a_gradient_that_turns_to_noise_takes_the_gain_to_s_and_no_further():
    adascale = AdaScale(base_batch=64, global_batch=512, groups=1, decay=0.95)
    gen = torch.Generator().manual_seed(1)
    _steps(adascale, gen, 200, g=0.1)
    gains = _steps(adascale, gen, 300, g=0.0)  # the true gradient vanishes: all noise
    assert max(gains) == 8.0 and gains[-1] > 7.0  # S: a batch 8x larger is worth 8 steps


def test_the_first_steps_run_at_the_base_rate_until_the_statistics_are_measured():
    adascale = AdaScale(base_batch=64, global_batch=512, groups=1, decay=0.95)
    gains = _steps(adascale, torch.Generator().manual_seed(2), 100, g=0.1)
    assert gains[:9] == [1.0] * 9 and gains[9] > 2.0  # the 10th step's own statistics


def test_an_overflowed_step_keeps_the_gain_and_does_not_advance():
    adascale = AdaScale(base_batch=64, global_batch=512, groups=1, decay=0.95)
    _steps(adascale, torch.Generator().manual_seed(3), 50, g=0.1)
    gain, progress = adascale.gain, adascale.progress
    adascale.observe([float("inf")], [float("inf")], 64)  # fp16: the scaler skips this step
    adascale.advance()
    assert (adascale.gain, adascale.progress) == (gain, progress)


def test_the_default_averaging_is_the_papers_theta_with_a_floor():
    assert default_decay(64) == pytest.approx(0.936)  # max(1 - S/1000, 0)
    assert default_decay(2000) == 0.9  # the paper's 0 would trust one step alone


@pytest.mark.parametrize("base", [128, 64])  # S = 4 and 8 at batch 512
def test_the_live_gain_matches_the_closed_form_of_linear_regression(tmp_path, true_b_simple,
                                                                      base):
    # The frozen linear model (FROZEN's lr 1e-9): its gradient noise is known exactly; the
    # same 300 steps as the B_simple test.
    metrics = train_in_process(tmp_path, *FROZEN, "optimizer.scale_lr=adascale",
                               f"optimizer.base_batch_size={base}", "trainer.accumulate=4",
                               "optimizer.adascale_decay=0.99")
    assert metrics["adascale_scale"] == 512 // base
    assert metrics["adascale_final_gain"] == pytest.approx(
        _true_gain(true_b_simple, base, 512), rel=0.10)


def test_one_worker_with_one_micro_batch_measures_every_fourth_step(tmp_path, true_b_simple):
    # Every 4th step runs as two half-batch micro-batches and is measured: the same closed
    # form as a run whose every step is split, from a quarter of the observations.
    metrics = train_in_process(tmp_path, *FROZEN, "optimizer.scale_lr=adascale",
                               "optimizer.base_batch_size=128", "trainer.accumulate=1",
                               "optimizer.adascale_decay=0.97")
    assert metrics["adascale_final_gain"] == pytest.approx(
        _true_gain(true_b_simple, 128, 512), rel=0.10)
    state = torch.load(tmp_path / "checkpoints" / "step-00000300.pt", weights_only=True)
    assert state["callbacks"]["adascale"]["total"]["steps"] == 300 // 4


ADASCALE = ("optimizer.scale_lr=adascale", "optimizer.base_batch_size=16",
            "data.batch_size=128", "trainer.accumulate=4", "trainer.epochs=2",
            "trainer.log_every=1", "logger=csv", "logger.tensorboard=false")


def test_each_step_runs_at_the_rate_times_its_gain_until_the_base_batch_epochs_are_done(
        tmp_path, capsys):
    metrics = train_in_process(tmp_path, *ADASCALE)
    assert ("AdaScale: S = 8 (global batch 128 / base batch 16); trainer.epochs=2 counts "
            "base-batch epochs: the run ends when its progress reaches them (between 2 and 16 "
            "real epochs") in capsys.readouterr().out
    series = _scalars(tmp_path)
    lrs, gains = series["train/lr"], series["adascale/gain"]
    assert lrs.keys() == gains.keys() and len(lrs) == metrics["steps"]
    # The constant schedule: every step's rate is optimizer.lr (0.05) times its own gain.
    assert all(lrs[s] == pytest.approx(0.05 * gains[s], rel=1e-6) for s in lrs)
    assert gains[1] == 1.0 and 1.5 < max(gains.values()) <= 8.0
    # The run ends at the first step whose progress reaches trainer.epochs=2 base-batch
    # epochs; with gains below S=8 that took more than 2 real epochs (and fewer than 16).
    progress, last = series["adascale/progress"], metrics["steps"]
    assert progress[last] >= 2.0 > progress[last - 1]
    assert metrics["adascale_progress_epochs"] == pytest.approx(progress[last])
    assert 2.0 < metrics["epochs"] < 16.0
    assert metrics["adascale_mean_gain"] == pytest.approx(
        sum(gains.values()) / len(gains), rel=1e-9)


def _scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    with (run_dir / "scalars.csv").open() as f:
        rows = [(int(r["step"]), r["tag"], float(r["value"])) for r in csv.DictReader(f)]
    series: dict[str, dict[int, float]] = {}
    for step, tag, value in rows:
        series.setdefault(tag, {})[step] = value
    return series


@pytest.mark.parametrize("every", [0, 40])
def test_evaluations_fall_at_points_of_base_batch_progress(tmp_path, every):
    # eval_every=0: at each base-batch epoch's end, not the loader's (real) epoch ends;
    # eval_every=40: every 40 base-batch steps of progress. Each at the first step whose
    # progress crosses the point, and once more at the run's end.
    metrics = train_in_process(tmp_path, *ADASCALE, f"trainer.eval_every={every}",
                               f"trainer.checkpoint_every={every}", "trainer.keep_last=100")
    series = _scalars(tmp_path)
    progress, last = series["adascale/progress"], metrics["steps"]
    base_steps = 8 * last / metrics["epochs"]  # per base-batch epoch: S x steps per epoch
    unit = (lambda p: p) if every == 0 else (lambda p: p * base_steps / every)
    crossings = {s for s in progress
                 if int(unit(progress[s]) + 1e-9) > int(unit(progress.get(s - 1, 0.0)) + 1e-9)}
    assert set(series["val/loss"]) == crossings | {last}
    assert len(crossings) == int(unit(progress[last]) + 1e-9) >= 2  # (not only the end)
    # Checkpoints: at the same points (checkpoint_every), and at every real epoch end.
    saved = {int(p.stem.split("-")[1]) for p in (tmp_path / "checkpoints").glob("step-*.pt")}
    per_epoch = round(last / metrics["epochs"])
    epoch_ends = set(range(per_epoch, last + 1, per_epoch))
    assert saved == (crossings if every else set()) | epoch_ends | {last}


def _steps_ran_at_rate_times_gain(run_dir: Path, metrics: dict) -> dict[int, float]:
    """Each step's rate was optimizer.lr (0.05, constant) x its gain, some gains above 1,
    and the run ended at the first step whose progress reached 2 base-batch epochs."""
    series = _scalars(run_dir)
    lrs, gains, progress = (series[tag] for tag in ("train/lr", "adascale/gain",
                                                    "adascale/progress"))
    assert all(lrs[s] == pytest.approx(0.05 * gains[s], rel=1e-6) for s in lrs)
    assert max(gains.values()) > 1.5
    last = metrics["steps"]
    assert progress[last] >= 2.0 > progress[last - 1]
    return series


def test_it_runs_with_ghost_batchnorm_clipping_and_gradient_noise_in_float64(tmp_path):
    # Clipping and the annealed noise change the averaged gradient after AdaScale measured
    # it (on_after_backward): the gain is the model's own gradients', the rate still scaled.
    metrics = train_in_process(tmp_path, *ADASCALE, "model.norm=batch",
                               "model.ghost_batch_size=16", "trainer.clip_grad_norm=0.5",
                               "noise=annealed", "trainer.dtype=float64")
    series = _steps_ran_at_rate_times_gain(tmp_path, metrics)
    assert max(series["train/grad_clipped"].values()) > 0  # clipping did act


def test_two_torchrun_workers_with_sync_batchnorm(tmp_path):
    run("torchrun", 2, *ADASCALE, "trainer.accumulate=2", "model.norm=batch",
        "model.sync_bn=true", f"hydra.run.dir={tmp_path}/w", cwd=tmp_path)
    metrics = json.loads((tmp_path / "w" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    _steps_ran_at_rate_times_gain(tmp_path / "w", metrics)


def test_a_resumed_run_ends_bit_identical_to_an_unbroken_one(tmp_path):
    run = (*ADASCALE[:5], "logger.tensorboard=false")
    whole = train_in_process(tmp_path / "whole", *run)
    train_in_process(tmp_path / "broken", *run, "trainer.max_steps=7")
    resumed = train_in_process(tmp_path / "broken", *run)
    assert resumed["resumed_from"] and resumed["steps"] == whole["steps"]
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "broken")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["adascale_progress_epochs"] == whole["adascale_progress_epochs"]
    assert resumed["adascale_final_gain"] == whole["adascale_final_gain"]


def test_a_run_that_splits_every_fourth_step_resumes_bit_identical(tmp_path):
    # One worker, one micro-batch: the measured steps are chosen by their number, so a run
    # resumed between two of them measures the same steps as an unbroken one.
    run = (*ADASCALE[:3], "trainer.accumulate=1", "trainer.epochs=2",
           "logger.tensorboard=false")
    whole = train_in_process(tmp_path / "whole", *run)
    train_in_process(tmp_path / "broken", *run, "trainer.max_steps=23")
    resumed = train_in_process(tmp_path / "broken", *run)
    assert whole["adascale_final_gain"] > 1.0 and resumed["steps"] == whole["steps"]
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "broken")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["adascale_progress_epochs"] == whole["adascale_progress_epochs"]


EQUAL_ADA = ("optimizer.scale_lr=adascale", "optimizer.base_batch_size=16", "trainer.epochs=8",
             "logger.tensorboard=false")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adascale_one")
    metrics = train_in_process(folder, *EQUIVALENCE, *EQUAL_ADA, "trainer.accumulate=4")
    return metrics, weights(folder)


def _same_as_one_process(one_process, run_dir) -> None:
    one, one_weights = one_process
    other = json.loads((run_dir / "metrics.json").read_text())
    assert one["adascale_final_gain"] > 1.0  # measured, not the start-up's 1
    for key in ("adascale_final_gain", "adascale_mean_gain", "adascale_progress_epochs"):
        assert other[key] == pytest.approx(one[key], rel=EXACT), key
    assert max_difference(one_weights, weights(run_dir)) < EXACT


@pytest.mark.parametrize("workers", [2, 4])
def test_torchrun_workers_reproduce_one_process_with_the_same_micro_batches(tmp_path,
                                                                           one_process, workers):
    """The gain depends on the global batch and its micro-batches, not on the world size:
    1 process x accumulate 4 = 2 workers x 2 = 4 workers x 1 (float64, per-sample dropout);
    each worker's own micro-batch norms are averaged in AdaScale's all-reduce."""
    run("torchrun", workers, *EQUIVALENCE, *EQUAL_ADA, f"trainer.accumulate={4 // workers}",
        f"hydra.run.dir={tmp_path}/w", cwd=tmp_path)
    _same_as_one_process(one_process, tmp_path / "w")


@pytest.mark.skipif(importlib.util.find_spec("horovod") is None, reason="Horovod not installed")
def test_two_horovod_workers_reproduce_one_process(tmp_path, one_process):
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        ["bash", str(ROOT / "launch" / "horovodrun.sh"), "2", *EQUIVALENCE, *EQUAL_ADA,
         "trainer.accumulate=2", *SHRINK, f"hydra.run.dir={tmp_path}/w"], cwd=tmp_path,
        capture_output=True, text=True,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": sys.executable},
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_as_one_process(one_process, tmp_path / "w")


def test_a_resume_at_another_scale_is_refused_in_one_line(tmp_path):
    from trainer.errors import UserError

    run = ADASCALE[:5]
    train_in_process(tmp_path, *run, "logger.tensorboard=false", "trainer.max_steps=3")
    with pytest.raises(UserError, match=r"AdaScale ran at S=8 .*this run at S=4"):
        train_in_process(tmp_path, *run[:2], "data.batch_size=64", *run[3:],
                         "logger.tensorboard=false")


def test_one_worker_whose_batch_does_not_halve_is_refused_in_one_line(tmp_path):
    from trainer.errors import UserError

    with pytest.raises(UserError, match=r"splits every optimizer.adascale_measure_every-th step "
                                        r"in two halves .* data.batch_size=126 does not split "
                                        r"into two halves of whole model.ghost_batch_size=2 "
                                        r"batches: use a multiple of 4"):
        train_in_process(tmp_path, *ADASCALE[:2], "data.batch_size=126", "trainer.accumulate=1",
                         "model.norm=batch", "model.ghost_batch_size=2",
                         "logger.tensorboard=false")
