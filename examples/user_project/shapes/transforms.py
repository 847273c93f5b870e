"""A model transform of the project's own: zero the classifier's last layer before training.

Every input then starts at equal logits (the loss of the first step is ln(num_classes) exactly),
a common start for a new head (Goyal et al. 2017 zero the last BatchNorm of each residual block
for the same reason). Configured like a callback::

    transforms:
      zero_head: {_target_: shapes.transforms.ZeroInitHead}

or given to ``trainer.fit(..., transforms=[ZeroInitHead()])``. It runs on every rank before
training, from the shared seed, after the framework's structural transforms (the model is
already on the run's device, in its dtype) and before freezing and compile.
"""

import torch
from torch import nn

import trainer


class ZeroInitHead(trainer.ModelTransform):
    name = "zero_head"
    after = ("to_device",)  # (where the list puts it anyway; said here as an example)

    def apply(self, model: nn.Module, build) -> nn.Module:
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
        return model
