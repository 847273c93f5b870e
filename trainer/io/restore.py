"""Bring a built run back to its resume checkpoint: every registered component (model,
optimizer, schedule, precision, noise scale, data, callbacks, progress, RNGs; trainer.io.state)
through the checkpointer, after saying which config keys differ from the checkpoint's and
what a change of world size cannot reproduce."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainer.config.flat import flatten
from trainer.engine.build import Run
from trainer.norms.base import BatchNorm, BatchNormVariant


def restore(run: Run) -> None:
    """Load the resume checkpoint (if any) into the run."""
    state = run.resume_state
    if state is None:
        return
    changed = config_changes(state["config"], run.cfg)
    if changed:
        run.logger.warning(f"config differs from the checkpoint's in: {', '.join(changed)}")
    saved_world = len(state.get("rng") or ())  # one RNG state per rank that wrote it
    if saved_world and saved_world != run.backend.world_size:
        _warn_batch_statistics(run, saved_world)
    run.checkpointer.load(state)
    run.resume_state = None  # free the copy


def _warn_batch_statistics(run: Run, saved_world: int) -> None:
    """At the same global batch the data order, augmentation and per-sample dropout follow
    the global index, so a resume on another number of workers continues the same run; plain
    BatchNorm does not: it normalises each worker's share of the batch."""
    plain = [name for name, m in run.model.named_modules()
             if isinstance(m, BatchNorm) and not isinstance(m, BatchNormVariant | nn.SyncBatchNorm)]
    if plain:
        run.logger.warning(
            f"checkpoint was written by {saved_world} workers, this run has "
            f"{run.backend.world_size}: BatchNorm ({', '.join(plain[:3])}) normalises each "
            "worker's share of the batch, so from here the run is not the one it would have "
            "been (model.sync_bn=true or model.ghost_batch_size keep it independent of the "
            "number of workers)"
        )


def config_changes(saved: dict, current: DictConfig) -> list[str]:
    """Keys whose value differs from the checkpoint's config (loop length keys excluded)."""
    ignore = ("trainer.resume", "trainer.epochs", "trainer.max_steps")
    old = flatten(saved)
    new = flatten(OmegaConf.to_container(current, resolve=True, enum_to_str=True))
    # (A key a later version added, at null, is no change: data.batch_plan...)
    return sorted(
        k for k in old.keys() | new.keys()
        if k not in ignore and old.get(k) != new.get(k) and (k in old or new[k] is not None)
    )
