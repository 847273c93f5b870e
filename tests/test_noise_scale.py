"""The gradient noise scale B_simple: the estimator, and the live estimate of a real run."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import FROZEN, train_in_process
from tests.test_distributed import run
from trainer.noise_scale import NoiseScale


def test_estimator_recovers_a_known_noise_scale_from_gaussian_gradients():
    # Gradients G + noise/sqrt(batch) with known G and covariance: B_simple = tr(S) / |G|^2.
    gen = torch.Generator().manual_seed(0)
    true_g = torch.full((256,), 0.1, dtype=torch.float64)
    sigma = 2.0  # per-coordinate std of one sample's gradient
    expected = 256 * sigma**2 / float(true_g.square().sum())  # 400
    estimate = NoiseScale(decay=0.99)
    for _ in range(2000):
        small = true_g + sigma * torch.randn(256, generator=gen, dtype=torch.float64) / 64**0.5
        other = true_g + sigma * torch.randn(256, generator=gen, dtype=torch.float64) / 64**0.5
        big = (small + other) / 2  # the average of two workers of 64: batch 128
        estimate.record(small.square().sum(), big.square().sum(), 64, 128)
        estimate.update([float(small.square().sum())], [float(big.square().sum())])
    assert estimate.value == pytest.approx(expected, rel=0.2)


def test_estimator_rejects_a_bad_decay_and_skips_overflowed_steps():
    with pytest.raises(ValueError, match=r"decay=1.0 must be in \[0, 1\)"):
        NoiseScale(decay=1.0)
    estimate = NoiseScale()
    estimate.record(torch.tensor(0.0), torch.tensor(0.0), 1, 2)
    estimate.update([float("inf")], [1.0])
    assert estimate.value is None and estimate.steps == 0


def test_one_process_estimate_is_within_20_percent(tmp_path, true_b_simple, capsys):
    metrics = train_in_process(tmp_path, *FROZEN, "trainer.noise_scale=always")
    assert metrics["b_simple"] == pytest.approx(true_b_simple, rel=0.2)
    out = capsys.readouterr().out
    assert f"B_simple = {metrics['b_simple']:,.0f}: the estimated critical batch" in out
    assert "this run's global batch is 512" in out


def test_two_worker_estimate_uses_each_workers_gradient_and_is_within_20_percent(
    tmp_path, true_b_simple
):
    # Each worker's own gradient (read by parameter hooks before DDP averages it).
    result = run("torchrun", 2, *FROZEN, "trainer.noise_scale=always",
                 f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["b_simple"] == pytest.approx(true_b_simple, rel=0.2)
    assert "B_simple" in result.stdout


def test_noise_scale_is_logged_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_in_process(tmp_path, "trainer.noise_scale=always", "trainer.max_steps=40")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    values = [e.value for e in events.Scalars("noise_scale/b_simple")]
    assert len(values) >= 2 and all(v > 0 for v in values)


def test_auto_is_off_in_one_process_and_always_needs_an_even_batch(tmp_path):
    assert train_in_process(tmp_path / "a", "trainer.max_steps=5")["b_simple"] is None
    from trainer.errors import UserError

    with pytest.raises(UserError, match=r"noise_scale=always \(2 micro-batches per step\) does "
                                        r"not divide the per-worker batch of 63"):
        train_in_process(tmp_path / "b", "trainer.noise_scale=always", "data.batch_size=63")
