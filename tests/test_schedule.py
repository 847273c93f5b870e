"""Per-step learning rates: exact values, no compounding, config wins on resume."""

from __future__ import annotations

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import train_in_process
from trainer.schedule import Constant, Schedule


class Halving(Schedule):
    """Halve every 3 steps: a non-trivial factor to check the mechanism, not a product feature."""

    def factor(self, step: int) -> float:
        return 0.5 ** (step // 3)


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


def test_factors_multiply_the_base_never_the_current_lr():
    opt = _optimizer(0.8, 0.4)
    schedule = Halving()
    schedule.attach(opt)
    seen = [schedule.apply(opt, step) for step in range(9)]
    assert seen == [0.8, 0.8, 0.8, 0.4, 0.4, 0.4, 0.2, 0.2, 0.2]
    assert opt.param_groups[1]["lr"] == 0.1
    assert schedule.apply(opt, 0) == 0.8  # no compounding: going back restores the base


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
