"""Large-batch optimizers (LAMB, LARS, LARC), parameter grouping, the configured optimizer
with its scaled lr (factory.py) and the learning-rate and batch-size schedules (schedule.py)."""

from trainer.optim.groups import split_bias_and_norm
from trainer.optim.lamb import LAMB
from trainer.optim.lars import LARC, LARS

__all__ = ["LAMB", "LARC", "LARS", "split_bias_and_norm"]
