"""Bring a built run back to a checkpoint: weights, optimizer state, schedule, progress, RNGs."""

from __future__ import annotations

from trainer.build import Progress, Run, config_changes
from trainer.errors import UserError
from trainer.seeding import set_rng_state
from trainer.stages import enter_stage


def restore(run: Run) -> None:
    """Load the resume checkpoint (if any) into the model, optimizer, schedule and RNGs."""
    state = run.resume_state
    if state is None:
        return
    changed = config_changes(state["config"], run.cfg)
    if changed:
        run.logger.warning(f"config differs from the checkpoint's in: {', '.join(changed)}")
    stage = state["progress"].get("stage", 0)
    if stage != run.progress.stage:  # the optimizer state below belongs to that stage's
        enter_stage(run, stage)
    # Hyper-parameters come from the config, state (momentum, moments) from the checkpoint:
    # load_state_dict would otherwise bring back the saved lr, weight decay, betas...
    configured = [
        {k: v for k, v in group.items() if k != "params"} for group in run.optimizer.param_groups
    ]
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        for group, values in zip(run.optimizer.param_groups, configured, strict=True):
            group.update(values)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(
            f"checkpoint {run.resumed_from} does not fit this model/optimizer "
            f"({str(exc).splitlines()[0]}); resume with the config it was trained with"
        ) from None
    run.schedule.load_state_dict(state["schedule"])
    run.precision.load_state_dict(state.get("precision", {}))
    if run.noise_scale is not None:
        run.noise_scale.load_state_dict(state.get("noise_scale", {}))
    run.progress = Progress(**state["progress"])
    run.callbacks.load_state_dict(state.get("callbacks", {}))
    per_rank = state["rng"]
    if len(per_rank) != run.backend.world_size:
        run.logger.warning(
            f"checkpoint was written by {len(per_rank)} workers, this run has "
            f"{run.backend.world_size}: every worker continues from rank 0's random state, so "
            "draws from the workers' own RNGs (per_rank dropout, random layers) will not match "
            "the original run (the data order, augmentation and per-sample dropout masks do)"
        )
    set_rng_state(per_rank[run.backend.rank if len(per_rank) == run.backend.world_size else 0])
    run.resume_state = None  # free the copy
