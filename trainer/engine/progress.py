"""Where a run is: saved in every checkpoint so that a resume continues mid-epoch."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Progress:
    """Where a run is; saved in every checkpoint so that a resume continues mid-epoch. Only
    progress: a feature's own state (early stopping's best value, the best checkpoint's step)
    is its callback's, saved under the callback's name."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch, 0-based
    batch: int = 0  # batches of the current epoch already consumed
    # Samples of the current epoch's order already consumed (over all workers): where the
    # epoch continues, whatever batch sizes it ran at (checkpoints before it: batch x the
    # epoch's batch, trainer.io.state).
    offset: int = 0
    train_sums: list[float] = field(default_factory=list)  # task metric sums of this epoch
    stage: int = 0  # index in trainer.stages whose model and optimizer are live
    train_time_s: float = 0.0  # training seconds before this process (resumed runs)
    samples: int = 0  # training samples consumed (global), for samples/s and the report
    # One entry per evaluation: step, samples seen, training seconds, and the eval metrics;
    # the batch-size report reads time-to-target from it.
    history: list[dict] = field(default_factory=list)
