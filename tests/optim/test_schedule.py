"""Per-step learning rates: exact values, no compounding, config wins on resume."""

from __future__ import annotations

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import train_in_process
from trainer.errors import UserError
from trainer.optim.schedule import Constant, Cosine, Poly, Schedule, Step


def _optimizer(*lrs: float) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


def test_constant_is_the_base_lr_at_every_step():
    opt = _optimizer(0.05, 0.2)
    schedule = Constant()
    schedule.attach(opt)
    for step in (0, 1, 1000, 10**7):
        assert schedule.apply(opt, step) == 0.05
        assert [g["lr"] for g in opt.param_groups] == [0.05, 0.2]


def _attached(schedule: Schedule, *lrs: float, per_epoch: int = 10, total: int = 10):
    opt = _optimizer(*lrs)
    schedule.attach(opt, steps_per_epoch=per_epoch, total_steps=total)
    return opt, [schedule.apply(opt, step) for step in range(total + 1)]


def test_linear_warmup_then_constant():
    opt, lrs = _attached(Constant(warmup_steps=4), 0.8, 0.4)
    assert lrs[:6] == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8, 0.8])
    assert opt.param_groups[1]["lr"] == pytest.approx(0.4)  # every group, same factor


def test_warmup_in_epochs_and_from_a_start_factor():
    _, lrs = _attached(Constant(warmup_epochs=0.5, warmup_start=0.2), 1.0, per_epoch=6)
    # 0.5 epoch of 6 steps = 3 warmup steps rising from 0.2 to 1.
    assert lrs[:5] == pytest.approx([0.2 + 0.8 / 3, 0.2 + 1.6 / 3, 1.0, 1.0, 1.0])


def test_step_decay_at_milestone_epochs():
    _, lrs = _attached(Step(milestones=[1, 2], gamma=0.1), 0.5, per_epoch=4, total=12)
    assert lrs[3] == pytest.approx(0.5) and lrs[4] == pytest.approx(0.05)
    assert lrs[8] == pytest.approx(0.005) and lrs[12] == pytest.approx(0.005)


def test_cosine_after_warmup():
    _, lrs = _attached(Cosine(warmup_steps=2, min_factor=0.1), 1.0, total=12)
    assert lrs[:2] == pytest.approx([0.5, 1.0])
    assert lrs[2] == pytest.approx(1.0)  # t = 0
    assert lrs[7] == pytest.approx(0.1 + 0.9 * 0.5)  # t = 1/2
    assert lrs[12] == pytest.approx(0.1)  # t = 1


def test_polynomial_decay():
    _, lrs = _attached(Poly(power=2.0), 2.0, total=10)
    assert lrs[0] == pytest.approx(2.0)
    assert lrs[5] == pytest.approx(2.0 * 0.25)
    assert lrs[10] == pytest.approx(0.0)


def test_no_compounding_going_back_restores_the_base():
    schedule = Cosine()
    opt, _ = _attached(schedule, 0.3, total=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)  # ended at t = 1
    assert schedule.apply(opt, 0) == pytest.approx(0.3)  # from the base, not the current lr


def test_cosine_warmup_run_logs_exact_rates(tmp_path):
    train_in_process(tmp_path, "schedule=cosine", "schedule.warmup_steps=3",
                     "optimizer.lr=0.04", "trainer.max_steps=9", "trainer.log_every=1")
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    logged = [e.value for e in events.Scalars("train/lr")]
    expected = [0.04 / 3, 0.08 / 3, 0.04] + [
        0.04 * 0.5 * (1 + math.cos(math.pi * i / 6)) for i in range(6)
    ]
    assert logged == pytest.approx(expected, rel=1e-6)


def test_warmup_steps_and_epochs_together_are_refused():
    with pytest.raises(UserError, match="not both"):
        Constant(warmup_steps=10, warmup_epochs=1.0)


def test_lr_logged_every_step_of_a_run_is_exact(tmp_path):
    train_in_process(tmp_path, "trainer.max_steps=12", "trainer.log_every=1", "optimizer.lr=0.0375")
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    lrs = [(e.step, e.value) for e in events.Scalars("train/lr")]
    assert [s for s, _ in lrs] == list(range(1, 13))
    assert all(v == torch.tensor(0.0375, dtype=torch.float32).item() for _, v in lrs)


def test_changed_lr_on_resume_is_used(tmp_path):
    train_in_process(tmp_path, "trainer.max_steps=5")
    train_in_process(
        tmp_path, "trainer.max_steps=10", "optimizer.lr=0.01", "optimizer.momentum=0.5"
    )
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["progress"]["step"] == 10
    group = state["optimizer"]["param_groups"][0]
    assert group["lr"] == 0.01 and group["momentum"] == 0.5
