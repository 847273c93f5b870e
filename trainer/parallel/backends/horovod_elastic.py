"""Horovod elastic: the run goes on when horovodrun adds or removes workers.

    horovodrun -np 4 --min-np 2 --max-np 8 --host-discovery-script ./hosts.sh \\
        python -m trainer recipe=mnist data.batch_size=512 dist.elastic=true

The run is an *attempt* that Horovod's ``hvd.elastic.run`` calls. The run commits its state
(every registered component, trainer.io.state, copied to host memory) at step boundaries: at
every log line (``trainer.log_every`` steps, where the loop has just read its losses back), at
every epoch start and after every checkpoint. When the discovery script reports other hosts,
every worker leaves the attempt at the next commit; when a worker dies, the others leave at
their next collective and go back to the last commit. Horovod then starts again with the new
set of workers, rank 0's last commit is broadcast to all of them (new ones included) and each
builds the run again at the new world size and loads it: a resume at another world size, in
memory (trainer.io.restore). The global batch (``data.batch_size``) stays; each worker's share
is recomputed, and a size that does not divide it stops the run with one line naming the
batch. At the same global batch the data order, augmentation and per-sample dropout follow the
global sample index, so the run continues as it would have (float64: the same weights to 1e-9,
tested); per-worker random draws (``trainer.dropout_masks=per_rank``, random layers) and plain
BatchNorm depend on the number of workers, and the run says so when it changes, as a resume
does. A worker whose slot was removed is stopped by Horovod itself (it aborts with "...has been
removed from elastic job"; horovodrun expects that exit).

Building the run does collectives (the config check, rank 0's run directory), so it happens
inside the attempt, where Horovod has every worker, old and new, at the same point.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trainer.callbacks import Callback
from trainer.engine.build import drop_unused_run_dir
from trainer.parallel.backends.horovod import Horovod, hvd

try:
    from horovod.common.elastic import State
except ImportError:  # pragma: no cover - Horovod missing: Horovod() already said so
    State = object


def host_copy(obj: Any) -> Any:
    """A copy that training cannot change and any worker can load: tensors cloned to the CPU,
    containers copied, everything else (numbers, strings) shared."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(host_copy(v) for v in obj)
    return obj


class RunState(State):
    """What a worker needs to continue the run: the shared run directory and the last commit,
    both rank 0's (:meth:`sync` broadcasts them)."""

    def __init__(self, backend: Horovod, run_dir: Path) -> None:
        super().__init__(bcast_object=self._broadcast, get_rank=hvd.rank)
        self.backend = backend
        self.run_dir = str(run_dir)
        self.committed: dict[str, Any] | None = None
        self.run = None  # the attempt's run, from its start (on_fit_start)

    @staticmethod
    def _broadcast(obj: Any) -> Any:
        return hvd.broadcast_object(obj, root_rank=0, name="trainer.elastic")

    def save(self) -> None:
        run = self.run
        state = host_copy(run.checkpointer.snapshot())
        # Replaced whole: a worker lost in the middle of a commit leaves the previous one.
        self.committed = state

    def restore(self) -> None:
        """Nothing to undo here: every attempt builds the run again from the last commit."""

    def sync(self) -> None:
        self.run_dir, self.committed = self._broadcast((self.run_dir, self.committed))

    def reset(self) -> None:
        # A model given to trainer.fit is trained again in place: the last attempt's Horovod
        # optimizer must stop all-reducing its gradients.
        if self.run is not None:
            self.backend.release(self.run.optimizer)
            self.run = None


class Commit(Callback):
    """Commits the run's state at its step boundaries (module docstring) on every rank."""

    def __init__(self, state: RunState, log_every: int) -> None:
        self.state, self.log_every = state, log_every

    def on_fit_start(self, run) -> None:
        self.state.run = run
        batch = run.loader.global_batch_size
        run.logger.info(
            f"elastic: {run.backend.world_size} worker(s) from step {run.step}, global batch "
            f"{batch} ({batch // run.backend.world_size} per worker)"
        )

    def on_step_start(self, run) -> None:
        # At these steps the loop holds no loss it has not read back (a log line or the
        # epoch's end read them all), so the committed progress is whole.
        if run.progress.batch == 0 or run.step % self.log_every == 0:
            self.state.commit()

    def on_checkpoint(self, run, path) -> None:
        self.state.commit()


def run_elastic(backend: Horovod, own_run_dir: Path, log_every: int,
                attempt: Callable[..., dict]) -> dict:
    """Train under Horovod elastic, committing at least every ``log_every`` steps;
    ``attempt(run_dir, continuing, callbacks)`` builds the run and trains it to the end
    (trainer.tools.train)."""

    @hvd.elastic.run
    def at_current_size(state: RunState) -> dict:
        backend.rejoin()
        run_dir = Path(state.run_dir)
        drop_unused_run_dir(own_run_dir, run_dir)
        continuing = None
        if state.committed is not None:
            step = state.committed["progress"]["step"]
            continuing = (f"the state of step {step} held in memory (Horovod elastic: "
                          f"{backend.world_size} worker(s) now)", state.committed)
        return attempt(run_dir, continuing, [Commit(state, log_every)])

    return at_current_size(RunState(backend, own_run_dir))
