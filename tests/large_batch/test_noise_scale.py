"""The gradient noise scale B_simple: the estimator and its uncertainty, and the live estimate
of real runs against the closed form of a linear-regression problem."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from tests.helpers import FROZEN, run, train_in_process
from trainer.large_batch.noise_scale import NoiseScale

# The live estimate after FROZEN's 300 steps (EMA decay 0.99) must be this close to the truth.
WITHIN = 0.10


def _gaussian_run(gen: torch.Generator, steps: int, decay: float, g: float = 0.1,
                  sigma: float = 2.0, dim: int = 256, b: int = 64) -> NoiseScale:
    """Two workers' gradients of batch b at a known G and per-sample covariance sigma^2 I."""
    true_g = torch.full((dim,), g, dtype=torch.float64)
    estimate = NoiseScale(decay=decay)
    for _ in range(steps):
        small = true_g + sigma * torch.randn(2, dim, generator=gen, dtype=torch.float64) / b**0.5
        big = small.mean(0)  # the average of two workers of b: batch 2b
        mean_small = small.square().sum(1).mean()
        estimate.record(mean_small, big.square().sum(), b, 2 * b)
        estimate.update([float(mean_small)], [float(big.square().sum())])
    return estimate


def test_estimator_recovers_a_known_noise_scale_from_gaussian_gradients():
    estimate = _gaussian_run(torch.Generator().manual_seed(0), 2000, 0.99)
    expected = 256 * 2.0**2 / (256 * 0.1**2)  # tr(S) / |G|^2 = 400
    assert estimate.value == pytest.approx(expected, rel=0.2)
    assert estimate.effective_steps == pytest.approx(199, rel=0.01)  # (1 + d) / (1 - d)


def test_the_standard_error_matches_the_spread_of_independent_estimates():
    # 60 independent runs: the reported standard error must describe how far one run's
    # estimate scatters (within 35%: the spread of 60 draws is itself uncertain by ~10%).
    gen = torch.Generator().manual_seed(1)
    runs = [_gaussian_run(gen, 300, 0.95) for _ in range(60)]
    values = [r.value for r in runs]
    assert all(v is not None for v in values)
    spread = statistics.stdev(values)
    reported = statistics.mean(r.stderr for r in runs)
    assert reported == pytest.approx(spread, rel=0.35)


def test_a_gradient_lost_in_noise_is_reported_as_not_measurable_never_as_a_number():
    # |G|^2 ~ 1e-6 against per-step noise of ~1: the |G|^2 average straddles zero.
    estimate = _gaussian_run(torch.Generator().manual_seed(2), 100, 0.95, g=1e-4)
    assert estimate.value is None and estimate.stderr is None
    reason = estimate.not_measurable_reason()
    assert reason.startswith("B_simple is not measurable yet after 100 steps")
    assert "trainer.noise_scale_ema" in reason or "more steps" in reason
    assert not estimate.describe(128).startswith("gradient noise scale B_simple =")


def test_a_weak_signal_says_how_many_more_steps_would_measure_it():
    estimate = _gaussian_run(torch.Generator().manual_seed(3), 3, 0.99, g=0.03)
    reason = estimate.not_measurable_reason()
    assert not estimate.measurable
    assert "more steps would make it so" in reason or "trainer.noise_scale_ema=" in reason


def test_estimator_rejects_a_bad_decay_and_skips_overflowed_steps():
    with pytest.raises(ValueError, match=r"decay=1.0 must be in \[0, 1\)"):
        NoiseScale(decay=1.0)
    estimate = NoiseScale()
    estimate.record(torch.tensor(0.0), torch.tensor(0.0), 1, 2)
    estimate.update([float("inf")], [1.0])
    assert estimate.value is None and estimate.steps == 0
    assert "needs at least 2" in estimate.not_measurable_reason()


def test_state_round_trips_and_old_checkpoints_still_load():
    estimate = _gaussian_run(torch.Generator().manual_seed(4), 50, 0.95)
    again = NoiseScale(0.95)
    again.load_state_dict(estimate.state_dict())
    assert (again.value, again.stderr) == (estimate.value, estimate.stderr)
    old = NoiseScale(0.95)  # a checkpoint written before the uncertainty was kept
    old.load_state_dict({"grad_sq": estimate.grad_sq, "trace": estimate.trace, "steps": 50})
    assert old.weight == pytest.approx(estimate.weight)
    assert old.effective_steps == pytest.approx(estimate.effective_steps)


def _check_against_truth(metrics: dict, true_b_simple: float) -> None:
    value, se = metrics["b_simple"], metrics["b_simple_stderr"]
    assert value == pytest.approx(true_b_simple, rel=WITHIN)
    # The uncertainty is honest: positive, and the truth within 4 standard errors.
    assert 0 < se < 0.05 * value and abs(value - true_b_simple) < 4 * se


@pytest.mark.parametrize("k", [2, 4])
def test_one_process_with_accumulation_is_within_10_percent(tmp_path, true_b_simple, capsys, k):
    metrics = train_in_process(tmp_path, *FROZEN, f"trainer.accumulate={k}")
    _check_against_truth(metrics, true_b_simple)
    out = capsys.readouterr().out
    assert f"B_simple = {metrics['b_simple']:,.0f} ± {metrics['b_simple_stderr']:,.0f}" in out
    assert "this run's global batch is 512" in out


def test_two_worker_estimate_uses_each_workers_gradient_and_is_within_10_percent(
    tmp_path, true_b_simple
):
    # Each worker's own gradient (read by parameter hooks before DDP averages it).
    result = run("torchrun", 2, *FROZEN, "trainer.noise_scale=always",
                 f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    _check_against_truth(metrics, true_b_simple)
    assert "B_simple" in result.stdout


def test_noise_scale_and_its_standard_error_are_logged_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_in_process(tmp_path, "trainer.noise_scale=always", "trainer.max_steps=40")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    values = [e.value for e in events.Scalars("noise_scale/b_simple")]
    errors = [e.value for e in events.Scalars("noise_scale/b_simple_stderr")]
    assert len(values) >= 2 and all(v > 0 for v in values)
    assert len(errors) == len(values) and all(e > 0 for e in errors)


def test_metrics_say_why_there_is_no_value(tmp_path):
    metrics = train_in_process(tmp_path / "a", "trainer.max_steps=5")
    assert metrics["b_simple"] is None
    assert metrics["b_simple_note"].startswith("not measured: trainer.noise_scale=auto")
    # One step with two micro-batches: too few steps to measure anything.
    metrics = train_in_process(tmp_path / "b", "trainer.max_steps=1", "trainer.accumulate=2")
    assert metrics["b_simple"] is None and metrics["b_simple_stderr"] is None
    assert metrics["b_simple_note"].startswith("B_simple is not measurable yet")


def test_always_needs_an_even_batch(tmp_path):
    from trainer.errors import UserError

    with pytest.raises(UserError, match=r"noise_scale=always \(2 micro-batches per step\) does "
                                        r"not divide the per-worker batch of 63"):
        train_in_process(tmp_path / "b", "trainer.noise_scale=always", "data.batch_size=63")
