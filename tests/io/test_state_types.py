"""Every checkpoint loads back: what a callback keeps in its state (numpy values, paths, dates,
deques...) round-trips through the safe loader, and anything that could not is refused in one
line before anything is written, instead of making the resume start over."""

from __future__ import annotations

import collections
import datetime
import decimal
import io
import pathlib
import threading

import numpy as np
import pytest
import torch

import trainer
from tests.helpers import EQUIVALENCE, SHRINK, weights
from tests.helpers.signals import SignalAt
from trainer.io.state_types import decode, encode, safe_globals

RUN = (*SHRINK, *EQUIVALENCE, "trainer.max_steps=40", "trainer.log_every=5",
       "logger.tensorboard=false")


def _kept() -> dict:
    return {
        "mean": np.float64(0.25), "count": np.int64(7), "flag": np.bool_(True),
        "curve": np.linspace(0, 1, 5), "where": pathlib.Path("/data/run"),
        "when": datetime.datetime(2026, 12, 5, 3, 0, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2026, 12, 5), "took": datetime.timedelta(seconds=90),
        "price": decimal.Decimal("1.25"), "recent": collections.deque([1.0, 2.0], maxlen=3),
        "seen": collections.defaultdict(list, {"a": [1]}), "frozen": frozenset({"x"}),
        "nested": {"deeper": [collections.deque([np.float32(1.5)])]},
        "plain": [1, "two", 3.0, None, (4, 5), {6}],
    }


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return type(b) is np.ndarray and a.dtype == b.dtype and bool((a == b).all())
    if isinstance(a, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple | collections.deque):
        return type(a) is type(b) and len(a) == len(b) and all(
            _same(x, y) for x, y in zip(a, b, strict=True)) and getattr(
            a, "maxlen", None) == getattr(b, "maxlen", None)
    return type(a) is type(b) and a == b


class KeepsEverything(trainer.Callback):
    """A user's callback whose state holds the values users keep."""

    def __init__(self) -> None:
        self.state, self.loaded = _kept(), None

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        self.loaded = state


def test_each_kept_value_loads_back_as_itself():
    buffer = io.BytesIO()
    torch.save(encode(_kept(), "callbacks.KeepsEverything"), buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(safe_globals()):
        back = decode(torch.load(buffer, weights_only=True))
    assert _same(_kept(), back)
    assert back["seen"]["new"] == []  # still a defaultdict(list)


@pytest.mark.parametrize(("value", "what"), [
    (object(), "a builtins.object"),
    (lambda: 0, "a lambda"),
    (threading.Lock(), "a _thread.lock"),
    (collections.namedtuple("Pair", "a b")(1, 2), "a namedtuple (Pair)"),
    (collections.defaultdict(lambda: 0), "a defaultdict whose default factory is"),
    (np.array([object()]), "a numpy array of Python objects"),
])
def test_what_cannot_load_back_is_named_with_its_key(value, what):
    with pytest.raises(trainer.UserError) as refused:
        encode({"history": [1, {"best": value}]}, "callbacks.Mine")
    assert str(refused.value).startswith(f"callbacks.Mine.history[1].best is {what}")
    assert "keep plain values in state_dict()" in str(refused.value)


def test_a_numpy_scalar_in_a_callbacks_state_survives_sigterm_and_the_resume(tmp_path):
    """The case that used to start over: SIGTERM at step 22, resumed there, every kept value
    back as itself, and the weights equal to a run never stopped."""
    whole = trainer.fit(RUN, callbacks=[KeepsEverything()], run_dir=tmp_path / "whole")
    assert whole["steps"] == 40
    with pytest.raises(trainer.Preempted) as stopped:
        trainer.fit(RUN, callbacks=[KeepsEverything(), SignalAt(22)], run_dir=tmp_path / "run")
    assert stopped.value.step == 22
    again = KeepsEverything()
    metrics = trainer.fit(RUN, callbacks=[again], run_dir=tmp_path / "run")
    assert metrics["resumed_from"].endswith("step-00000022.pt") and metrics["steps"] == 40
    assert _same(_kept(), again.loaded)
    final, reference = weights(tmp_path / "run"), weights(tmp_path / "whole")
    assert all(torch.equal(final[k], reference[k]) for k in final)


class Holds(trainer.Callback):
    def __init__(self, value, from_step: int = 0) -> None:
        self.value, self.from_step, self.step = value, from_step, 0

    def on_step_end(self, run) -> None:
        self.step = run.step

    def state_dict(self) -> dict:
        return {"thing": self.value if self.step >= self.from_step else None}


def test_a_state_that_cannot_be_saved_stops_before_the_first_step_or_the_first_write(tmp_path):
    with pytest.raises(trainer.UserError) as refused:
        trainer.fit(RUN, callbacks=[Holds(object())], run_dir=tmp_path / "start")
    assert str(refused.value).startswith("callbacks.Holds.thing is a builtins.object")
    assert not list((tmp_path / "start" / "checkpoints").glob("*.pt"))  # nothing trained
    # Kept only later (after the start's check): refused at the first save, nothing written.
    late = [*RUN, "trainer.checkpoint_every=10"]
    with pytest.raises(trainer.UserError) as refused:
        trainer.fit(late, callbacks=[Holds(threading.Lock(), from_step=5)],
                    run_dir=tmp_path / "late")
    assert str(refused.value).startswith("callbacks.Holds.thing is a _thread.lock")
    assert not list((tmp_path / "late" / "checkpoints").glob("*.pt"))
