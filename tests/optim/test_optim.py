"""LAMB, LARS and LARC: exact updates on small tensors against the papers' formulas."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from tests.helpers import train_in_process
from trainer.optim import LAMB, LARC, LARS, split_bias_and_norm


def _param(values, grad):
    w = nn.Parameter(torch.tensor(values, dtype=torch.float64))
    w.grad = torch.tensor(grad, dtype=torch.float64)
    return w


def _close(w: torch.Tensor, expected) -> None:
    assert w.detach().tolist() == pytest.approx(expected, abs=1e-6, rel=1e-6)


def test_lars_first_step_by_hand():
    # ||w|| = 5, ||g|| = 1: local_lr = 0.001 * 5 / (1 + 0.01 * 5) = 0.0047619...;
    # update = local_lr * (g + 0.01 w) = local_lr * [0.63, 0.84] = [0.003, 0.004].
    w = _param([3.0, 4.0], [0.6, 0.8])
    LARS([w], lr=0.1, momentum=0.9, weight_decay=0.01, trust_coefficient=0.001).step()
    _close(w, [3.0 - 0.1 * 0.003, 4.0 - 0.1 * 0.004])


def test_lars_momentum_keeps_lr_outside_the_buffer():
    w = _param([3.0, 4.0], [0.6, 0.8])
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001)
    opt.step()
    first = [0.001 * 5 / 1 * g for g in (0.6, 0.8)]  # v1
    opt.param_groups[0]["lr"] = 0.2
    w.grad = torch.tensor([0.6, 0.8], dtype=torch.float64)
    opt.step()
    norm = math.hypot(3.0 - 0.1 * first[0], 4.0 - 0.1 * first[1])
    second = [0.9 * v + 0.001 * norm * g for v, g in zip(first, (0.6, 0.8), strict=True)]
    _close(w, [3.0 - 0.1 * first[0] - 0.2 * second[0], 4.0 - 0.1 * first[1] - 0.2 * second[1]])


def test_larc_clips_the_local_rate_at_the_global_one():
    # local_lr / lr = 0.0047619 / 0.1 < 1: the factor is 0.047619, update [0.03, 0.04].
    w = _param([3.0, 4.0], [0.6, 0.8])
    LARC([w], lr=0.1, momentum=0.0, weight_decay=0.01, trust_coefficient=0.001).step()
    _close(w, [3.0 - 0.1 * 0.03, 4.0 - 0.1 * 0.04])
    # local_lr / lr = 4.76 > 1: clipped to 1, plain SGD on g + 0.01 w.
    w = _param([3.0, 4.0], [0.6, 0.8])
    LARC([w], lr=0.001, momentum=0.0, weight_decay=0.01, trust_coefficient=0.001).step()
    _close(w, [3.0 - 0.001 * 0.63, 4.0 - 0.001 * 0.84])


def test_lamb_first_step_by_hand():
    w = _param([3.0, 4.0], [0.6, 0.8])
    LAMB([w], lr=0.1, weight_decay=0.01).step()
    # Bias-corrected moments after one step are g and g^2.
    u = [g / (abs(g) + 1e-6) + 0.01 * x for g, x in zip((0.6, 0.8), (3.0, 4.0), strict=True)]
    ratio = 5.0 / math.hypot(*u)
    _close(w, [3.0 - 0.1 * ratio * u[0], 4.0 - 0.1 * ratio * u[1]])


def test_lamb_second_step_uses_bias_corrected_moments():
    w = _param([1.0, -2.0], [0.5, 0.1])
    opt = LAMB([w], lr=0.01, betas=(0.8, 0.9), weight_decay=0.0)
    opt.step()
    w.grad = torch.tensor([-0.2, 0.3], dtype=torch.float64)
    w1 = w.detach().tolist()
    opt.step()
    u = []
    for g1, g2 in ((0.5, -0.2), (0.1, 0.3)):
        m = 0.8 * (0.2 * g1) + 0.2 * g2
        v = 0.9 * (0.1 * g1 * g1) + 0.1 * g2 * g2
        u.append((m / (1 - 0.8**2)) / (math.sqrt(v / (1 - 0.9**2)) + 1e-6))
    ratio = math.hypot(*w1) / math.hypot(*u)
    _close(w, [w1[0] - 0.01 * ratio * u[0], w1[1] - 0.01 * ratio * u[1]])


@pytest.mark.parametrize("cls", [LARS, LARC, LAMB])
def test_trust_ratio_is_one_when_a_norm_is_zero(cls):
    w = _param([0.0, 0.0], [0.6, 0.8])
    kwargs = {"momentum": 0.0} if cls is not LAMB else {}
    cls([w], lr=0.1, **kwargs).step()
    assert w.detach().abs().sum() > 0  # moved: ratio 1, not 0


def test_groups_without_adaptation_are_plain_sgd():
    w = _param([3.0, 4.0], [0.6, 0.8])
    LARS([{"params": [w], "adapt": False, "weight_decay": 0.0}], lr=0.1, momentum=0.0).step()
    _close(w, [3.0 - 0.06, 4.0 - 0.08])


def test_bias_and_norm_parameters_get_their_own_group():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    groups = split_bias_and_norm(model)
    assert [p.shape for p in groups[0]["params"]] == [(3, 4), (2, 3)]
    assert len(groups[1]["params"]) == 4 and groups[1]["weight_decay"] == 0.0
    assert groups[1]["adapt"] is False


@pytest.mark.parametrize(
    "make",
    [lambda p: LARS(p, lr=0.0), lambda p: LARS(p, lr=0.1, momentum=1.0),
     lambda p: LARS(p, lr=0.1, trust_coefficient=0.0), lambda p: LAMB(p, betas=(0.9, 1.0)),
     lambda p: LAMB(p, eps=0.0), lambda p: LAMB(p, weight_decay=-1.0)],
)
def test_bad_hyper_parameters_raise_value_error(make):
    with pytest.raises(ValueError):
        make([nn.Parameter(torch.zeros(2))])


@pytest.mark.parametrize("cls", [LARS, LAMB])
def test_state_dict_round_trip_and_old_state_dicts_load(cls):
    w = _param([3.0, 4.0], [0.6, 0.8])
    opt = cls([w], lr=0.1)
    opt.step()
    buffer = io.BytesIO()  # through a file, as a checkpoint would (no shared tensors)
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    for group in state["param_groups"]:
        del group["adapt"]  # as saved before the key existed
    w2 = _param(w.detach().tolist(), [0.6, 0.8])
    fresh = cls([w2], lr=0.1)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["adapt"] is True
    w.grad = torch.tensor([0.6, 0.8], dtype=torch.float64)
    opt.step()
    fresh.step()
    assert torch.equal(w, w2)


@pytest.mark.parametrize("optimizer", ["lamb", "lars", "larc"])
def test_large_batch_optimizers_train_through_the_config(tmp_path, optimizer):
    metrics = train_in_process(tmp_path, f"optimizer={optimizer}", "trainer.epochs=5",
                               "schedule.warmup_epochs=1")
    assert metrics["test_accuracy"] > 0.7


def test_fused_lamb_without_apex_or_cuda_says_what_is_missing(tmp_path):
    from tests.helpers import train_in_process
    from trainer.errors import UserError

    with pytest.raises(UserError, match=r"optimizer.fused=true needs NVIDIA apex .* use "
                                        r"optimizer.fused=false"):
        train_in_process(tmp_path, "optimizer=lamb", "optimizer.fused=true")
