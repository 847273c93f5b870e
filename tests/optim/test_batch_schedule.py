"""schedule=increase_batch (Smith et al. 2017): the global batch grows at milestone epochs."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import EXACT, FLOAT64, max_difference, run, train_in_process, weights
from trainer.errors import UserError
from trainer.optim.schedule import IncreaseBatch

GROW = ("schedule=increase_batch", "schedule.milestones=[1,2]", "schedule.factor=2",
        "data.batch_size=32", "trainer.epochs=3", "logger.sample_predictions=0")


def test_batch_grows_at_milestones_then_the_lr_decays_past_the_cap():
    schedule = IncreaseBatch(milestones=[1, 2, 3], factor=2, max_batch_size=512)
    batches = schedule.global_batches(128, num_samples=10_000, epochs=5)
    assert batches == [128, 256, 512, 512, 512]
    steps = [10_000 // b for b in batches]  # 78, 39, 19, 19, 19
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    schedule.attach(opt, steps_per_epoch=steps, total_steps=sum(steps))
    first_of_epoch = [sum(steps[:e]) for e in range(5)]
    lrs = [schedule.apply(opt, s) for s in first_of_epoch]
    assert lrs == pytest.approx([0.4, 0.4, 0.4, 0.2, 0.2])  # the cap: milestone 3 halves lr
    assert schedule.epoch_at(first_of_epoch[3]) == 3.0
    assert schedule.epoch_at(first_of_epoch[1] + 19) == pytest.approx(1.5 - 0.5 / 39)


def test_milestones_must_be_whole_epochs():
    with pytest.raises(UserError, match=r"milestones must be whole epochs"):
        IncreaseBatch(milestones=[1.5])
    with pytest.raises(UserError, match=r"schedule.factor=1 must be a whole number >= 2"):
        IncreaseBatch(factor=1)


def test_a_run_uses_each_epochs_batch(tmp_path):
    metrics = train_in_process(tmp_path, *GROW)
    n = 1294  # the digits training split less its 144 validation rows
    assert metrics["steps"] == n // 32 + n // 64 + n // 128
    assert metrics["global_batch_size"] == 32 and metrics["final_global_batch_size"] == 128
    assert metrics["epochs"] == 3.0
    assert [h["samples"] for h in metrics["history"]] == [
        n // 32 * 32, n // 32 * 32 + n // 64 * 64, n // 32 * 32 + n // 64 * 64 + n // 128 * 128
    ]


def test_resume_across_a_batch_change_matches_an_uninterrupted_run(tmp_path):
    train_in_process(tmp_path / "ref", *GROW)
    train_in_process(tmp_path / "cut", *GROW, "trainer.max_steps=50")  # stops inside epoch 1
    train_in_process(tmp_path / "cut", *GROW)  # resumes from step 50
    a = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_workers_reproduce_one_worker_with_a_growing_batch(tmp_path):
    run("none", 1, *GROW, FLOAT64, f"hydra.run.dir={tmp_path}/one", cwd=tmp_path)
    run("torchrun", 2, *GROW, FLOAT64, f"hydra.run.dir={tmp_path}/two", cwd=tmp_path)
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "two")) < EXACT
