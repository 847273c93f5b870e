"""Large-batch optimizers (LAMB, LARS, LARC) and parameter grouping."""

from trainer.optim.groups import split_bias_and_norm
from trainer.optim.lamb import LAMB
from trainer.optim.lars import LARC, LARS

__all__ = ["LAMB", "LARC", "LARS", "split_bias_and_norm"]
