"""Gradient noise: the right statistics, and replicas that stay identical."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import EXACT, FLOAT64, max_difference, run, train_in_process, weights
from trainer.large_batch.grad_noise import Annealed, SmallBatch

NOISY = ("data.batch_size=96", "trainer.max_steps=20", "logger.sample_predictions=0", FLOAT64)


@pytest.mark.parametrize("step", [0, 9, 99])
def test_annealed_noise_has_zero_mean_and_the_scheduled_variance(step):
    noise = Annealed(eta=0.3, gamma=0.55)
    noise.bind(seed=7)
    p = torch.nn.Parameter(torch.zeros(200_000, dtype=torch.float64))
    p.grad = torch.zeros_like(p)
    noise.perturb([p], step)
    expected = 0.3 / (1 + step) ** 0.55
    assert abs(float(p.grad.mean())) < 5 * (expected / 200_000) ** 0.5
    assert float(p.grad.var()) == pytest.approx(expected, rel=0.02)


def test_annealed_noise_is_the_same_on_every_rank_and_new_each_step():
    draws = []
    for step in (5, 5, 6):
        noise = Annealed()
        noise.bind(seed=1)
        p = torch.nn.Parameter(torch.zeros(10))
        p.grad = torch.zeros(10)
        noise.perturb([p], step)
        draws.append(p.grad.clone())
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_small_batch_weights_match_the_small_batch_covariance():
    noise = SmallBatch(small_batch=128)
    noise.bind(seed=3)
    z = torch.cat([noise.sample_weights(s, 8192, 0, 1) for s in range(20)])
    assert float(z.mean()) == pytest.approx(1.0, abs=5 * (63 / z.numel()) ** 0.5)
    assert float(z.var()) == pytest.approx(8192 / 128 - 1, rel=0.02)
    whole = noise.sample_weights(4, 1024, 0, 1)
    halves = torch.cat([noise.sample_weights(4, 1024, r, 2) for r in (0, 1)])
    assert torch.equal(whole, halves)  # global sample i gets the same weight on any rank
    assert SmallBatch(small_batch=256).sample_weights(0, 128, 0, 1) is None


@pytest.mark.parametrize("noise", ["noise=annealed", "noise=small_batch noise.small_batch=24"])
def test_noisy_runs_on_two_workers_match_one_worker(tmp_path, noise):
    args = (*NOISY, *noise.split(), "trainer.checkpoint_every=5")
    train_in_process(tmp_path / "one", *args)
    train_in_process(tmp_path / "clean", *NOISY)
    # 2 workers: the replica check at every checkpoint (steps 5..20) passes, and the result is
    # the one worker's, so both replicas took the same noisy steps.
    run("torchrun", 2, *args, f"hydra.run.dir={tmp_path}/two", cwd=tmp_path)
    one = weights(tmp_path / "one")
    assert max_difference(one, weights(tmp_path / "two")) < EXACT
    assert max_difference(one, weights(tmp_path / "clean")) > 1e-4  # the noise did something
