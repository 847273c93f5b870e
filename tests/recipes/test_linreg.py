"""The seed's linear-regression study as a recipe: it converges, stops itself, and shows the
batch size trading gradient noise for samples."""

from __future__ import annotations

import statistics

import pytest
import torch

from tests.helpers import train_in_process


def test_linreg_learns_the_true_line_and_stops_when_converged(tmp_path, capsys):
    metrics = train_in_process(tmp_path, "recipe=linreg")
    assert metrics["stopped_early"] and metrics["epochs"] < 100
    # The test MSE cannot go below the noise variance (1.0); it gets close to it.
    assert 0.9 < metrics["test_loss"] < 1.1
    assert metrics["test_accuracy"] is None  # regression has no accuracy
    model = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert model["weight"].flatten().tolist() == pytest.approx([2.0], abs=0.15)
    assert model["bias"].item() == pytest.approx(1.0, abs=0.15)
    assert "SYNTHETIC" in capsys.readouterr().out  # says honestly what it trains on


def test_batch_size_trades_gradient_noise_for_samples(tmp_path):
    small = train_in_process(tmp_path / "small", "recipe=linreg", "data.batch_size=8")
    full = train_in_process(tmp_path / "full", "recipe=linreg", "data.batch_size=8192")
    # Full-batch GD: one noiseless step per pass over the data, so far more samples to converge
    # than noisy steps of 8 ...
    samples = {name: m["steps"] * m["global_batch_size"] for name, m in (("small", small),
                                                                        ("full", full))}
    assert samples["full"] > 100 * samples["small"]
    assert full["history"][-1]["samples"] == samples["full"]  # the report's x-axis
    # ... while batch-8 SGD keeps bouncing around the optimum: its validation MSE over the
    # last evaluations varies many times more. Both end at the noise floor on the test split
    # (MSE ~ noise_std^2 = 1; early stopping on validation keeps SGD's best neighbourhood).
    def spread(m):
        return statistics.pstdev(e["val/loss"] for e in m["history"][-8:])

    assert spread(small) > 10 * spread(full)
    assert abs(full["test_loss"] - small["test_loss"]) < 0.02 * full["test_loss"]


def test_early_stop_min_delta_ignores_tiny_improvements(tmp_path):
    strict = train_in_process(tmp_path / "a", "recipe=linreg",
                              "callbacks.early_stopping.min_delta=0")
    loose = train_in_process(tmp_path / "b", "recipe=linreg",
                             "callbacks.early_stopping.min_delta=0.5")
    assert loose["steps"] < strict["steps"]
