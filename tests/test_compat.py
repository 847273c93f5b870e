"""Each private API of another package that trainer/compat.py uses, exercised against the
installed version: an upgrade of torch, Hydra or Horovod that moves one fails here, by name,
with the version it was written for."""

from __future__ import annotations

import importlib.metadata
import inspect

import pytest
import torch

from trainer import compat


def _written_for(package: str) -> str:
    return (f"trainer/compat.py was written for {package} {compat.WRITTEN_FOR[package]}; "
            f"{importlib.metadata.version(package)} is installed: update that module")


def test_hydra_locate_finds_a_dotted_target():
    assert compat.locate("torch.nn.Linear") is torch.nn.Linear, _written_for("hydra-core")


def test_hydra_group_options_lists_a_groups_options():
    from trainer.config import PRIMARY_CONFIG, register_configs

    register_configs()
    args, options = compat.hydra_group_options(["recipe=mnist"], PRIMARY_CONFIG, "train")
    assert list(args.overrides) == ["recipe=mnist"], _written_for("hydra-core")
    assert {"sgd", "lamb", "lars"} <= set(options("optimizer")), _written_for("hydra-core")


def test_the_scalers_own_scale_tensor_is_its_scale():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.ones(()))  # the scale tensor exists once something was scaled
    scale = compat.loss_scale_tensor(scaler)
    assert isinstance(scale, torch.Tensor) and float(scale) == 1024.0, _written_for("torch")


def test_the_graph_task_id_tells_backward_passes_apart():
    w = torch.ones(3, requires_grad=True)
    seen = []
    w.register_hook(lambda g: seen.append(compat.graph_task_id()))
    for _ in range(2):
        (w * 2).sum().backward()
    assert compat.graph_task_id() == -1, _written_for("torch")  # outside a backward
    assert len(seen) == 2 and seen[0] != seen[1] and -1 not in seen, _written_for("torch")


def test_a_retired_horovod_optimizer_is_silenced_through_its_countdowns():
    optimizer = pytest.importorskip("horovod.torch.optimizer")
    source = inspect.getsource(optimizer._DistributedOptimizer)
    # The hook counts down _allreduce_delay[p] backward passes before it communicates.
    assert "self._allreduce_delay[p] -= 1" in source, _written_for("horovod")
    assert "if self._allreduce_delay[p] == 0" in source, _written_for("horovod")


def test_numpy_values_load_back_through_the_safe_loader_with_its_globals():
    import io

    import numpy as np

    buffer = io.BytesIO()
    torch.save({"x": np.float64(1.5), "n": np.int64(3), "a": np.arange(3.0),
                "b": np.bool_(True)}, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(compat.numpy_pickle_globals()):
        back = torch.load(buffer, weights_only=True)
    assert back["x"] == 1.5 and back["n"] == 3 and back["b"], _written_for("numpy")
    assert type(back["x"]) is np.float64 and (back["a"] == np.arange(3.0)).all()
