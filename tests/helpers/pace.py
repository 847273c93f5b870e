"""A callback that slows a run down to a known pace, so that a test can act on it (change
the hosts, kill a worker) while it trains; it changes nothing the run computes."""

from __future__ import annotations

import time

from trainer.callbacks import Callback


class Pace(Callback):
    """Sleep ``seconds`` after every step."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, run) -> None:
        time.sleep(self.seconds)
