"""Staged runs (``trainer.stages``): at the first epoch of each stage, freeze and unfreeze
its submodules and build its optimizer (trainer.stages has the why); log the switch."""

from __future__ import annotations

from trainer.callbacks import Callback
from trainer.engine.stages import enter_stage, stage_of


class StageSwitch(Callback):
    def __init__(self) -> None:
        self.announced = -1  # the stage whose start was last logged (again after a resume)

    def on_epoch_start(self, run) -> None:
        p, stages = run.progress, run.cfg.trainer.stages
        index = stage_of(stages, p.epoch)
        if index != p.stage:
            enter_stage(run, index)
        elif index == self.announced:
            return
        self.announced = index
        trainable = sum(t.numel() for t in run.model.parameters() if t.requires_grad)
        run.logger.info(
            f"stage {index + 1}/{len(stages)} '{stages[index].name}' from epoch {p.epoch}: "
            f"{trainable:,} trainable parameters, {type(run.optimizer).__name__} "
            f"lr {run.optimizer.param_groups[0]['lr']:.3g}"
        )
        run.logger.scalars({"train/stage": index}, p.step)
