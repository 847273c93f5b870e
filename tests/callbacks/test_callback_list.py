"""The run's callbacks by name: trainer.fit's instances keyed by their class, not their place
in the list, and a checkpoint written when they were keyed by place still restores them."""

from __future__ import annotations

from tests.helpers import compose_config
from trainer.callbacks import Callback
from trainer.callbacks.from_config import build_callbacks


class Counter(Callback):
    def __init__(self) -> None:
        self.count = 0

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class Other(Callback):
    pass


def test_fit_callbacks_are_keyed_by_their_class_and_old_positional_keys_still_load():
    first, other, second = Counter(), Other(), Counter()
    first.count, second.count = 3, 5
    callbacks = build_callbacks(compose_config(), [first, other, second])
    names = list(callbacks.named)
    assert names[-3:] == ["Counter", "Other", "Counter_2"]
    assert callbacks.state_dict()["Counter"] == {"count": 3}
    # Another list (Other dropped): the state still finds each Counter by name.
    again = build_callbacks(compose_config(), [Counter(), Counter()])
    again.load_state_dict(callbacks.state_dict())
    assert [again.named["Counter"].count, again.named["Counter_2"].count] == [3, 5]
    # A checkpoint from before: keyed by class name and position in the list.
    old = build_callbacks(compose_config(), [Other(), Counter()])
    old.load_state_dict({"Counter_1": {"count": 7}})
    assert old.named["Counter"].count == 7
