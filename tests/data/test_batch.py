"""Batches of any structure: what the step, the loader and the tally do to them."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from torch import nn

from trainer.data.batch import (
    call_model,
    cast_floats,
    cat,
    describe,
    inputs_and_targets,
    joinable,
    rows,
    split,
)
from trainer.data.memory import prepare_batch
from trainer.engine.tally import Tally
from trainer.errors import UserError
from trainer.tasks import Classification

Pair = namedtuple("Pair", "left right")


def nested(n: int = 6):
    return {"image": torch.arange(n * 4.0).view(n, 4), "meta": (torch.arange(n), ["a"] * n),
            "pair": Pair(torch.ones(n, 2), torch.zeros(n)), "label": torch.arange(n) % 2}


def test_micro_batches_cut_every_tensor_and_per_sample_list_of_a_nested_batch():
    batch = nested(6)
    parts = split(batch, 3)
    assert [rows(p) for p in parts] == [2, 2, 2]
    assert torch.equal(parts[1]["image"], batch["image"][2:4])
    assert torch.equal(parts[2]["meta"][0], torch.tensor([4, 5]))
    assert parts[0]["meta"][1] == ["a", "a"] and isinstance(parts[0]["meta"], tuple)
    assert isinstance(parts[0]["pair"], Pair) and parts[0]["pair"].left.shape == (2, 2)
    joined = cat(parts)  # and back
    assert torch.equal(joined["image"], batch["image"]) and joined["meta"][1] == ["a"] * 6
    assert split(batch, 1) == [batch]


def test_floats_take_the_runs_dtype_and_integers_stay():
    cast = cast_floats(nested(), torch.float64)
    assert cast["image"].dtype == torch.float64 and cast["pair"].left.dtype == torch.float64
    assert cast["label"].dtype == torch.int64 and cast["meta"][0].dtype == torch.int64


def test_a_pair_gets_the_datas_transform_on_its_inputs_and_other_structures_do_not():
    def to_unit(x):
        return x.float() / 255

    pixels = torch.full((2, 3), 255, dtype=torch.uint8)
    x, y = prepare_batch([pixels, torch.tensor([0.5, 1.5])], to_unit, torch.float64)
    assert x.dtype == torch.float32 and float(x.max()) == 1.0  # (the transform's own dtype)
    assert y.dtype == torch.float64  # float targets in the run's dtype
    fields = prepare_batch({"pixels": pixels, "w": torch.ones(2)}, to_unit, torch.float64)
    assert fields["pixels"].dtype == torch.uint8 and fields["w"].dtype == torch.float64


def test_the_default_split_into_inputs_and_targets():
    x, y = torch.ones(2, 3), torch.tensor([0, 1])
    assert inputs_and_targets((x, y))[1] is y
    inputs, targets = inputs_and_targets([x, x, y])
    assert isinstance(inputs, tuple) and len(inputs) == 2 and targets is y
    inputs, targets = inputs_and_targets({"a": x, "b": x, "target": y}, "target")
    assert set(inputs) == {"a", "b"} and targets is y
    assert inputs_and_targets(x) == (x, None)
    with pytest.raises(UserError, match=r"dict\(a: 2x3 float32, y: 2 int64\) without the key "
                                        r"'label' for the targets; set task.target_key"):
        inputs_and_targets({"a": x, "y": y})


def test_the_model_takes_a_tuple_positionally_and_a_dict_by_name():
    class Two(nn.Module):
        def forward(self, first, second=None):
            return first * 10 + (0 if second is None else second)

    one, two = torch.ones(1), torch.full((1,), 2.0)
    assert float(call_model(Two(), (one, two))) == 12
    assert float(call_model(Two(), {"second": one, "first": two})) == 21
    assert float(call_model(Two(), one)) == 10


def test_a_built_in_task_without_targets_says_what_to_give_it():
    with pytest.raises(UserError, match=r"Classification needs targets, and the batch 4x2 "
                                        r"float32 has none"):
        Classification().forward(nn.Identity(), torch.ones(4, 2))


def test_joining_needs_one_structure_and_one_shape_after_the_rows():
    assert joinable(nested(4), nested(2))
    other = nested(4)
    other["image"] = torch.ones(4, 5)
    assert not joinable(nested(4), other)
    assert not joinable(torch.ones(()), torch.ones(()))  # no rows to join along
    assert describe(nested(2)["pair"]) == "Pair(2x2 float32, 2 float32)"


def test_the_tally_counts_structured_outputs_like_tensors():
    class TwoHeads(Classification):
        extra_sums = ("second_correct",)

        def counts(self, outputs, targets):
            return torch.stack([(outputs[0].argmax(1) == targets["a"]).sum(),
                                (outputs[1].argmax(1) == targets["b"]).sum()])

    torch.manual_seed(0)
    batches = [((torch.randn(n, 3), torch.randn(n, 3)),
                {"a": torch.randint(3, (n,)), "b": torch.randint(3, (n,))}) for n in (4, 4, 3)]
    tally = Tally(TwoHeads())
    for outputs, targets in batches:
        tally.add(outputs, targets)
    one_by_one = sum(TwoHeads().counts(o, t) for o, t in batches)
    assert torch.equal(tally.take(), one_by_one.double())
    assert tally.take() is None
