"""Lockstep: contenders running at once take turns on the machine, a few steps each.

A shared VM's speed drifts by 10-20% over seconds (other tenants, the host's clock): two
whole runs one after the other, even alternated for many rounds, then differ by more than
the few percent bench/overhead.py looks for. In lockstep every contender is started at once
and all wait until each is ready to train; then only the one holding the turn computes, for
``every`` steps, and hands the turn to the next, round and round. Each times only its own
turns, so each sees the same machine within a fraction of a second of the others, and the
drift cancels out of the ratio. Evaluation and checkpoints happen while holding the turn with
the timer stopped (no other contender runs meanwhile); a contender's last turn ends when its
process exits, so its teardown does not slow the others' last turns.

The harness (bench/side_by_side.py ``lockstep``) passes, in ``BENCH_LOCKSTEP``, this process's
file descriptors: the pipe its turn arrives on, the next contender's, the pipe to say it is
ready on, and ``every``. Without the variable every call here does nothing, so the contenders
run unchanged on their own. Standard library only: the hand-written loop imports it too.
"""

from __future__ import annotations

import os
import time

ENV = "BENCH_LOCKSTEP"


class Turns:
    """This process's side of the lockstep; :meth:`seconds` is the time timed in its turns."""

    def __init__(self, spec: str | None) -> None:
        self.active = bool(spec)
        self.every, self.total, self.turns = 0, 0.0, 0
        self._since: float | None = None
        self._holding = self._alone = False
        self._mine = self._next = self._ready = None
        if self.active:
            mine, following, ready, every = (int(v) for v in spec.split(","))
            self._mine, self._next, self._ready, self.every = mine, following, ready, every

    @classmethod
    def from_env(cls) -> Turns:
        return cls(os.environ.get(ENV))

    def _take(self) -> None:
        if self._ready is not None:  # the first turn: say this process is ready to train
            os.write(self._ready, b"r")
            os.close(self._ready)
            self._ready = None
        # An empty read: every other contender has exited, the machine is this one's alone.
        if not self._alone and os.read(self._mine, 1) == b"":
            self._alone = True
        self._holding, self.turns = True, self.turns + 1

    def _give(self) -> None:
        self._holding = False
        if self._alone:
            return
        try:
            os.write(self._next, b"t")
        except BrokenPipeError:  # the next one has exited: pass the turn round to the others
            self._alone = True

    def resume(self) -> None:
        """Start timing (an epoch starts), waiting for the turn if this process has none."""
        if not self.active:
            return
        if not self._holding:
            self._take()
        self._since = time.perf_counter()

    def pause(self) -> None:
        """Stop timing, keeping the turn (an epoch ends: evaluation and a checkpoint follow)."""
        if self.active and self._since is not None:
            self.total += time.perf_counter() - self._since
            self._since = None

    def step(self, step: int) -> None:
        """After optimizer step ``step``: every ``every`` steps, hand the turn on and wait."""
        if self.active and step % self.every == 0 and self._since is not None:
            self.pause()
            self._give()
            self.resume()

    def seconds(self) -> float:
        """The time timed so far (training in this process's turns)."""
        return self.total
