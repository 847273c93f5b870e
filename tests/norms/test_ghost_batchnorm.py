"""Ghost BatchNorm: each ghost batch normalised on its own; plain BatchNorm in eval."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers import run_cli, train_in_process
from trainer.norms.ghost import GhostBatchNorm, apply_ghost_batchnorm


def _batch(shape=(32, 3, 4, 4)):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64) * 2 + 3
    return x + torch.arange(shape[0], dtype=torch.float64).view(-1, *[1] * (len(shape) - 1))


@pytest.mark.parametrize("shape", [(32, 3, 4, 4), (32, 5)])
def test_each_ghost_batch_is_normalised_on_its_own(shape):
    model = apply_ghost_batchnorm(nn.Sequential(nn.BatchNorm2d(shape[1]) if len(shape) == 4
                                                else nn.BatchNorm1d(shape[1])).double(), 8)
    y = model(_batch(shape))
    dims = [0] + list(range(2, len(shape)))
    for ghost in y.split(8):
        assert torch.allclose(ghost.mean(dims), torch.zeros(shape[1], dtype=torch.float64),
                              atol=1e-9)
        assert torch.allclose(ghost.var(dims, unbiased=False),
                              torch.ones(shape[1], dtype=torch.float64), atol=1e-4)
    # ...and not as one batch: the whole batch's mean per ghost differs (rows were shifted)
    whole = nn.BatchNorm2d(shape[1]).double() if len(shape) == 4 else nn.BatchNorm1d(
        shape[1]).double()
    assert not torch.allclose(whole(_batch(shape)), y)


def test_running_statistics_average_the_ghost_statistics():
    x = _batch()
    ghost = GhostBatchNorm(3, 8, momentum=0.5).double()
    ghost(x)
    dims = [0, 2, 3]
    means = torch.stack([c.mean(dims) for c in x.split(8)]).mean(0)
    variances = torch.stack([c.var(dims, unbiased=True) for c in x.split(8)]).mean(0)
    assert torch.allclose(ghost.running_mean, 0.5 * means)
    assert torch.allclose(ghost.running_var, 0.5 * 1 + 0.5 * variances)


def test_eval_is_exactly_batchnorm():
    bn = nn.BatchNorm2d(3).double()
    bn(_batch())  # some running statistics
    ghost = apply_ghost_batchnorm(nn.Sequential(bn), 8)[0]
    assert isinstance(ghost, GhostBatchNorm)
    ghost.eval()
    reference = nn.BatchNorm2d(3).double()
    reference.load_state_dict(ghost.state_dict())
    reference.eval()
    assert torch.equal(ghost(_batch()), reference(_batch()))


def test_a_batch_that_does_not_divide_keeps_a_smaller_last_ghost():
    y = GhostBatchNorm(5, 8).double()(_batch((20, 5)))
    assert y.shape == (20, 5)
    assert torch.allclose(y[16:].mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-9)


def test_ghost_bn_switch_trains_the_mlp(tmp_path):
    metrics = train_in_process(tmp_path, "model.norm=batch", "model.ghost_batch_size=16",
                               "trainer.epochs=3")
    assert metrics["test_accuracy"] > 0.7
    assert "ghost_batch_size: 16" in (tmp_path / "config.yaml").read_text()


def test_ghost_and_sync_bn_together_are_refused(tmp_path):
    result = run_cli("model.norm=batch", "model.ghost_batch_size=16", "model.sync_bn=true",
                     f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert result.returncode == 2 and "choose one" in result.stderr
