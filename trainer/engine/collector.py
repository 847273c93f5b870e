"""Python's cyclic garbage collector around a run: paused while the CLI starts, blind to
everything built before training while training runs, and to everything left when the CLI
exits.

Why: a full (generation 2) collection walks every object the process holds, and a training
process holds about 350,000 of them (torch, Hydra, the run's objects); on a 2-core VM one pass
takes 0.12 s. Measured with bench/overhead.py (docs/performance.md): the passes that fell
inside training cost 3% of the MNIST MLP's samples/s, and the ones during start-up 0.4 s of
every job of a sweep. Nothing built before the first step is ever garbage while the run lasts,
so training freezes those objects (``gc.freeze``: collections no longer walk them) and
collections go on as usual for whatever training itself creates; the objects are handed back
to the collector when the run ends.

At exit the interpreter collects again, several full passes while it tears its modules down:
1.0-1.3 s of every ``trainer`` process on a 2-core AMD EPYC VM (0.5 s after ``import torch``
alone), paid by each job of a sweep after its files are written. The CLI freezes what is left
first (:func:`freeze_for_exit`), once the run's own objects are collected: 0.2 s.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_paused_for_startup = False


def pause_for_startup() -> None:
    """No collections while the command imports, composes and builds (a few thousand cyclic
    objects of garbage at most; training turns collection back on). Only the CLI calls this:
    a user's own process keeps its own settings."""
    global _paused_for_startup
    if gc.isenabled():
        gc.disable()
        _paused_for_startup = True


@contextmanager
def frozen_heap() -> Iterator[None]:
    """While training: what exists now is left out of every collection (see the module
    docstring). A process that froze objects itself (``gc.freeze`` before forking) is left as
    it is."""
    global _paused_for_startup
    ours = gc.get_freeze_count() == 0
    if ours:
        gc.freeze()
    if _paused_for_startup:
        gc.enable()
        _paused_for_startup = False
    try:
        yield
    finally:
        if ours:
            gc.unfreeze()


def freeze_for_exit() -> None:
    """The CLI is done: its runs are collected (their cycles' finalizers have run, see
    trainer.tools.train) and what remains lives until the process ends, so the interpreter's
    teardown is spared walking it again and again. Only the CLI calls this, as it exits."""
    gc.freeze()
