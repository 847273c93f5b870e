"""Dropout in data-parallel runs: per-sample masks (N workers = 1 worker with dropout on) and,
with per_rank masks, a distinct RNG stream on every rank."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers import EQUIVALENCE, EXACT, max_difference, run, train_in_process, weights
from trainer.parallel.sample_dropout import BatchPosition, SampleDropout, apply_sample_dropout


def _layer(p: float = 0.3, channels: bool = False, layer: int = 0):
    position = BatchPosition()
    return SampleDropout(p, seed=11, layer=layer, position=position, channels=channels), position


def _mask(layer: SampleDropout, position: BatchPosition, step: int, first: int,
          x: torch.Tensor) -> torch.Tensor:
    position.set(step, first, len(x))
    return layer(x) != 0


def test_a_samples_mask_does_not_depend_on_how_the_batch_is_split():
    layer, position = _layer()
    x = torch.ones(96, 40, dtype=torch.float64)
    whole = _mask(layer, position, 7, 0, x)
    for parts in (2, 3, 4, 96):  # workers, or micro-batches of one worker
        size = 96 // parts
        pieces = [_mask(layer, position, 7, i * size, x[i * size:(i + 1) * size])
                  for i in range(parts)]
        assert torch.equal(torch.cat(pieces), whole)
    assert not torch.equal(_mask(layer, position, 8, 0, x), whole)  # a new step, new masks


def test_masks_are_independent_bernoulli_draws():
    layer, position = _layer(p=0.3)
    other, _ = _layer(p=0.3, layer=1)
    x = torch.ones(512, 256)
    keep = _mask(layer, position, 3, 0, x).double()
    n = keep.numel()
    assert float(keep.mean()) == pytest.approx(0.7, abs=4 * (0.21 / n) ** 0.5)
    # Per element over samples, and per sample over elements: no stuck bits.
    assert float(keep.mean(0).std()) == pytest.approx((0.21 / 512) ** 0.5, rel=0.2)
    assert float(keep.mean(1).std()) == pytest.approx((0.21 / 256) ** 0.5, rel=0.2)
    # Neighbouring samples, neighbouring elements, the next step and another layer agree
    # as often as independent draws do: 0.7^2 + 0.3^2 = 0.58.
    agree = 0.58
    tolerance = 4 * (agree * (1 - agree) / n) ** 0.5 * 1.5
    assert float((keep[1:] == keep[:-1]).double().mean()) == pytest.approx(agree, abs=tolerance)
    assert float((keep[:, 1:] == keep[:, :-1]).double().mean()) == pytest.approx(
        agree, abs=tolerance)
    next_step = _mask(layer, position, 4, 0, x).double()
    assert float((next_step == keep).double().mean()) == pytest.approx(agree, abs=tolerance)
    position.set(3, 0, len(x))
    other.position = position
    other_layer = (other(x) != 0).double()
    assert float((other_layer == keep).double().mean()) == pytest.approx(agree, abs=tolerance)


def test_kept_values_are_scaled_and_the_gradient_follows_the_mask():
    layer, position = _layer(p=0.25)
    x = torch.randn(16, 8, dtype=torch.float64, requires_grad=True)
    position.set(0, 0, 16)
    y = layer(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.75)
    y.sum().backward()
    assert torch.equal(x.grad, kept.double() / 0.75)
    layer.eval()
    assert layer(x) is x  # no dropout in eval mode


def test_channel_dropout_drops_whole_feature_maps():
    layer, position = _layer(p=0.5, channels=True)
    position.set(0, 0, 4)
    y = layer(torch.ones(4, 6, 3, 3))
    per_map = y.view(4, 6, 9)
    assert torch.equal(per_map.amin(2), per_map.amax(2))  # each map all kept or all dropped


def test_outside_a_training_step_the_layer_is_plain_dropout():
    layer, _ = _layer(p=0.5)
    y = layer(torch.ones(1000))
    assert 0.4 < float((y == 0).double().mean()) < 0.6


def test_sequence_first_tensors_get_the_same_masks_as_batch_first(caplog):
    layer, position = _layer()
    x = torch.ones(8, 5, 4)  # (N, L, H)
    position.set(0, 0, 8)
    batch_first = layer(x) != 0
    sequence_first = layer(x.transpose(0, 1)) != 0  # (L, N, H), nn.Transformer's default
    assert torch.equal(sequence_first.transpose(0, 1), batch_first)
    # No batch dimension at all: the worker's own masks, said once.
    layer(torch.ones(40, 4))
    layer(torch.ones(40, 4))
    warnings = [r for r in caplog.records if "no batch dimension of 8" in r.getMessage()]
    assert len(warnings) == 1 and "per-worker masks" in warnings[0].getMessage()


def test_the_swap_finds_every_dropout_and_names_what_it_cannot_swap():
    from trainer_recipes.asl.model import ASLCNN

    model = ASLCNN()
    assert apply_sample_dropout(model, 0, BatchPosition()) == []
    swapped = [m for m in model.modules() if isinstance(m, SampleDropout)]
    assert [m.p for m in swapped] == [0.2, 0.3] and [m.layer for m in swapped] == [0, 1]
    assert not any(type(m) is nn.Dropout for m in model.modules())
    rnn = nn.Sequential(nn.LSTM(4, 4, num_layers=2, dropout=0.1), nn.Dropout(0.1))
    assert apply_sample_dropout(rnn, 0, BatchPosition()) == ["0"]


# --- real runs: the digits MLP with dropout 0.2, float64 (EQUIVALENCE) -----------------------

def test_per_rank_masks_differ_between_workers_and_from_one_worker(tmp_path):
    args = (*EQUIVALENCE, "trainer.dropout_masks=per_rank")
    run("none", 1, *args, f"hydra.run.dir={tmp_path}/one", cwd=tmp_path)
    run("torchrun", 2, *args, f"hydra.run.dir={tmp_path}/two", cwd=tmp_path)
    # Each worker drew its own masks: not the one-worker model (per_sample matches it).
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "two")) > 1e-4
    state = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)
    masks = []
    with torch.random.fork_rng():
        for rank_state in state["rng"]:  # what each rank's dropout would draw next
            torch.set_rng_state(rank_state["torch"])
            masks.append(nn.functional.dropout(torch.ones(48, 512), 0.2) != 0)
    agreement = float((masks[0] == masks[1]).double().mean())
    assert agreement == pytest.approx(0.8**2 + 0.2**2, abs=0.01)  # independent: 0.68, not 1


def test_changing_the_world_size_on_resume_keeps_the_one_worker_result(tmp_path):
    """2 workers to step 25, then 1 worker to 50: the same model as 1 worker throughout."""
    run("none", 1, *EQUIVALENCE, f"hydra.run.dir={tmp_path}/one", cwd=tmp_path)
    run("torchrun", 2, *EQUIVALENCE, "trainer.max_steps=25", f"hydra.run.dir={tmp_path}/cut",
        cwd=tmp_path)
    resumed = train_in_process(tmp_path / "cut", *EQUIVALENCE)
    assert resumed["resumed_from"] and resumed["steps"] == 50
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "cut")) < EXACT
