"""``quant=qat``'s schedule: before each step, switch fake quantization, observers and
BatchNorm freezing to the phase the step is in (quant.start_step, freeze_observer_step,
freeze_bn_step); after a step with observers on, make every worker's observers agree."""

from __future__ import annotations

from trainer.callbacks import Callback


class QATPhases(Callback):
    def __init__(self, schedule) -> None:
        self.schedule = schedule  # trainer.quant.qat.QATSchedule
        self.observing = False

    def on_step_start(self, run) -> None:
        step = run.progress.step
        phase = self.schedule.phase(step)
        if phase != run.model.phase:
            run.model.set_phase(phase)
            run.logger.info(f"step {step}: quantization-aware training phase: {phase.describe()}")
            run.logger.scalars({"quant/fake_quant": int(phase.fake_quant),
                                "quant/observers": int(phase.observe),
                                "quant/bn_frozen": int(phase.bn_frozen)}, step)
        self.observing = phase.observe

    def on_step_end(self, run) -> None:
        if self.observing and run.backend.world_size > 1:
            run.model.sync_observers(run.backend)
