"""SyncBatchNorm on the CPU over Gloo equals plain BatchNorm on the combined batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from trainer.norms.sync import SyncBatchNorm, convert_sync_batchnorm

WORLD = 3


def _data(shape):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64) * 3 + 1.5
    g = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return x, g


def _reference(shape):
    x, g = _data(shape)
    x.requires_grad_(True)
    bn = nn.BatchNorm2d(shape[1]).double()
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 1.5, shape[1]))
        bn.bias.copy_(torch.linspace(-0.5, 0.5, shape[1]))
    for _ in range(2):  # two steps: running statistics accumulate
        y = bn(x)
    (y * g).sum().backward()
    return y.detach(), x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var, bn


def _worker(rank: int, init: str, shape, out: dict) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    x, g = _data(shape)
    share = shape[0] // WORLD
    x_local = x[rank * share : (rank + 1) * share].clone().requires_grad_(True)
    g_local = g[rank * share : (rank + 1) * share]
    _, _, _, _, _, _, ref_bn = _reference(shape)  # same initial weight/bias draw
    bn = nn.BatchNorm2d(shape[1]).double()
    bn.load_state_dict({k: v for k, v in ref_bn.state_dict().items() if "running" not in k
                        and "num_batches" not in k}, strict=False)

    def all_reduce(t):
        dist.all_reduce(t)
        return t

    sync = convert_sync_batchnorm(nn.Sequential(bn), all_reduce)[0]
    assert isinstance(sync, SyncBatchNorm)
    for _ in range(2):
        y = sync(x_local)
    (y * g_local).sum().backward()
    weight_grad = all_reduce(sync.weight.grad.clone())
    bias_grad = all_reduce(sync.bias.grad.clone())
    out[rank] = (y.detach(), x_local.grad, weight_grad, bias_grad, sync.running_mean.clone(),
                 sync.running_var.clone())
    dist.destroy_process_group()


def test_sync_batchnorm_matches_batchnorm_on_the_combined_batch(tmp_path):
    shape = (12, 4, 5, 3)
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(f"file://{tmp_path}/store", shape, out), nprocs=WORLD)
    y, dx, dw, db, rm, rv, _ = _reference(shape)
    share = shape[0] // WORLD
    for rank in range(WORLD):
        y_r, dx_r, dw_r, db_r, rm_r, rv_r = out[rank]
        sl = slice(rank * share, (rank + 1) * share)
        torch.testing.assert_close(y_r, y[sl], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(dx_r, dx[sl], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(dw_r, dw, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(db_r, db, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(rm_r, rm, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(rv_r, rv, rtol=1e-9, atol=1e-9)


def test_one_process_and_eval_mode_are_plain_batchnorm():
    x, _ = _data((8, 3, 4, 4))
    bn = nn.BatchNorm2d(3).double()
    sync = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3).double()), lambda t: t)[0]
    torch.testing.assert_close(sync(x), bn(x))
    torch.testing.assert_close(sync.running_var, bn.running_var)
    sync.eval()
    bn.eval()
    torch.testing.assert_close(sync(x), bn(x))
