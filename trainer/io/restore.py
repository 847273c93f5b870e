"""Bring a built run back to its resume checkpoint: every registered component (model,
optimizer, schedule, precision, noise scale, data, callbacks, progress, RNGs; trainer.io.state)
through the checkpointer, after saying which config keys differ from the checkpoint's."""

from __future__ import annotations

from trainer.engine.build import Run, config_changes


def restore(run: Run) -> None:
    """Load the resume checkpoint (if any) into the run."""
    state = run.resume_state
    if state is None:
        return
    changed = config_changes(state["config"], run.cfg)
    if changed:
        run.logger.warning(f"config differs from the checkpoint's in: {', '.join(changed)}")
    run.checkpointer.load(state)
    run.resume_state = None  # free the copy
