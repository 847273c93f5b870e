"""The model transforms' one ordered list (trainer.engine.transforms): what the config asks for,
in the order the code says, a user's transform where its ``after`` puts it, and one line for a
list that breaks an ordering rule."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import compose_config
from trainer.engine.transforms import ModelTransform, apply_transforms, check_order, run_transforms
from trainer.errors import UserError


def _names(transforms) -> list[str]:
    return [t.name for t in transforms]


class Mark(ModelTransform):
    def __init__(self, name: str, after=(), wraps: bool = False) -> None:
        self.name, self.after, self.wraps = name, tuple(after), wraps


def test_the_default_list_and_every_built_in_in_its_order():
    assert _names(run_transforms(compose_config(), 1)) == [
        "to_device", "pretrained", "sample_dropout"]
    cfg = compose_config("recipe=vgg16_transfer", "model.ghost_batch_size=8",
                         "trainer.compile=true")
    assert _names(run_transforms(cfg, 1)) == [
        "ghost_bn", "to_device", "pretrained", "sample_dropout", "freeze", "compile"]
    # SyncBN where there are several workers; QAT's graph instead of swapped dropout.
    cfg = compose_config("model.sync_bn=true", "quant=qat")
    assert _names(run_transforms(cfg, 2)) == ["sync_bn", "to_device", "pretrained", "qat"]


def test_a_users_transform_goes_before_freezing_unless_its_after_says_later():
    cfg = compose_config("recipe=vgg16_transfer", "trainer.compile=true",
                         "+transforms.sample_dropout=null")
    given = [Mark("mine"), Mark("late", after=("freeze",)), Mark("second")]
    assert _names(run_transforms(cfg, 1, given)) == [
        "to_device", "pretrained", "mine", "second", "freeze", "late", "compile"]


def test_a_list_that_breaks_an_ordering_rule_is_refused_naming_both():
    with pytest.raises(UserError, match="'b' must come after 'a', which the list has later"):
        check_order([Mark("b", after=("a",)), Mark("a")])
    with pytest.raises(UserError, match="'mine' changes the model after 'compile' wrapped it"):
        check_order([Mark("compile", wraps=True), Mark("mine")])
    check_order([Mark("a"), Mark("b", after=("a", "absent"))])  # an absent name binds nothing


def test_checkpoints_hold_the_model_a_wrapping_transform_was_given():
    class Wrap(ModelTransform):
        name, wraps = "wrap", True

        def apply(self, model, build):
            return torch.nn.Sequential(model)

    class NotAModule(ModelTransform):
        name = "broken"

        def apply(self, model, build):
            return None

    inner = torch.nn.Linear(2, 2)
    model, forward = apply_transforms(inner, [Wrap()], build=None)
    assert model is inner and forward[0] is inner
    with pytest.raises(UserError, match="'broken' returned a NoneType, not a torch.nn.Module"):
        apply_transforms(inner, [NotAModule()], build=None)


def test_a_transform_hears_of_the_optimizer_over_the_model_it_changed(tmp_path):
    from trainer.engine.build import build_run
    from trainer.parallel.backends.base import Backend

    class Record(ModelTransform):
        name = "record"

        def apply(self, model, build):
            self.model = model
            return model

        def after_optimizer(self, model, optimizer):
            self.seen = (model, optimizer)

    record = Record()
    run = build_run(compose_config(), tmp_path, Backend(torch.device("cpu")),
                    objects={"transforms": [record]})
    try:
        assert record.seen == (run.model, run.optimizer) and record.model is run.model
    finally:
        run.logger.close()
        run.checkpointer.close()
