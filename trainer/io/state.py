"""One state protocol: every stateful part of a run saves and restores through it.

A component is anything with ``state_dict()`` and ``load_state_dict(state)`` (``Stateful``):
the model, the optimizer, the schedule, the precision's loss scaler, the noise-scale
estimate, the data, the callbacks, the run's progress and the RNGs. Each is registered once,
by name, with the run's :class:`~trainer.io.checkpoint.Checkpointer` (in ``build_run``), which
writes all of them into one checkpoint and loads them back, in registration order, when the
run resumes. The adapters below give that interface to the parts that need the run around
them: the optimizer is rebuilt when a stage starts, the progress decides which stage's
optimizer the saved state belongs to, the RNG state is one per rank.

Checkpoint files keep the layout they always had (one top-level key per component), so
checkpoints written before this module existed resume unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Protocol, runtime_checkable

from trainer.engine.progress import Progress
from trainer.engine.seeding import rng_state, set_rng_state
from trainer.engine.stages import enter_stage
from trainer.errors import UserError


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ProgressState:
    """Where the run is (step, epoch, position in it, best metric, history...). Loaded first:
    a run resumed in a later stage re-enters that stage, whose optimizer the saved optimizer
    state belongs to."""

    def __init__(self, run) -> None:
        self.run = run

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.run.progress)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        known = {f.name for f in fields(Progress)}
        progress = Progress(**{k: v for k, v in state.items() if k in known})
        if "offset" not in state:  # written before the position was kept in samples
            progress.offset = progress.batch * self.run.epoch_batches[
                min(progress.epoch, len(self.run.epoch_batches) - 1)]
        if (why := _impossible(progress)) is not None:
            raise UserError(
                f"checkpoint {self.run.resumed_from} holds an impossible progress ({why}): it "
                "was edited or damaged; resume from another checkpoint "
                "(trainer.resume=PATH) or start over on purpose (trainer.resume=null)")
        if progress.stage != self.run.progress.stage:
            enter_stage(self.run, progress.stage)
        self.run.progress = progress


def _impossible(p: Progress) -> str | None:
    """What no run can have written, whatever its config: counts that are negative or not
    whole, or more steps than samples consumed (every step consumes at least one)."""
    counts = {"step": p.step, "epoch": p.epoch, "batch": p.batch, "samples": p.samples,
              "stage": p.stage, "offset": p.offset}
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{name} {value!r}"
    if p.samples < p.step or p.batch > p.step or p.epoch > p.step:
        return f"step {p.step}, epoch {p.epoch}, batch {p.batch}, {p.samples} samples consumed"
    if p.offset > p.samples or p.offset < p.batch:
        return f"{p.offset} samples into epoch {p.epoch} after {p.samples} in all"
    return None


class ModelState:
    """The bare model's weights (what predict/export rebuild), refused in one line when they do
    not fit the configured model."""

    def __init__(self, run) -> None:
        self.run = run

    def state_dict(self) -> dict[str, Any]:
        return self.run.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.run.model.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise _does_not_fit(self.run, exc) from None


class OptimizerState:
    """The live optimizer's state (momentum, moments). Hyper-parameters come from the config,
    not the checkpoint: load_state_dict would otherwise bring back the saved lr, weight decay,
    betas..."""

    def __init__(self, run) -> None:
        self.run = run

    def state_dict(self) -> dict[str, Any]:
        return self.run.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        optimizer = self.run.optimizer
        configured = [{k: v for k, v in group.items() if k != "params"}
                      for group in optimizer.param_groups]
        try:
            optimizer.load_state_dict(state)
            for group, values in zip(optimizer.param_groups, configured, strict=True):
                group.update(values)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise _does_not_fit(self.run, exc) from None


class RNGState:
    """Every rank's Python, NumPy, torch (and CUDA) generators: gathered from all ranks on
    save (a collective: every rank saves), each rank takes its own back on load."""

    def __init__(self, run) -> None:
        self.run = run

    def state_dict(self) -> list[dict[str, Any]]:
        return self.run.backend.all_gather_object(rng_state())  # one per rank

    def load_state_dict(self, per_rank: list[dict[str, Any]]) -> None:
        backend = self.run.backend
        if len(per_rank) != backend.world_size:
            self.run.logger.warning(
                f"checkpoint was written by {len(per_rank)} workers, this run has "
                f"{backend.world_size}: every worker continues from rank 0's random state, so "
                "draws from the workers' own RNGs (per_rank dropout, random layers) will not "
                "match the original run (the data order, augmentation and per-sample dropout "
                "masks do)"
            )
        set_rng_state(per_rank[backend.rank if len(per_rank) == backend.world_size else 0])


def _does_not_fit(run, exc: Exception) -> UserError:
    # torch's first line only says "Error(s) in loading state_dict for MLP:"; the last names
    # the keys or the shapes.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [repr(exc)]
    return UserError(
        f"checkpoint {run.resumed_from} does not fit this model/optimizer ({lines[-1][:200]}); "
        "resume with the config it was trained with"
    )
