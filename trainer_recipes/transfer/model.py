"""VGG16's convolutional base with a new head: global average pooling, dropout, one logit.

The seed (NVIDIA DLI's "presidential doggy door"): Keras' VGG16 without its top, ImageNet
weights, frozen; GlobalAveragePooling2D; Dense(1) trained with binary cross-entropy on logits;
then the base unfrozen and everything fine-tuned with RMSprop at 1e-5. The stages are the
recipe's (``trainer.stages``); this module is only the network and its weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from trainer.errors import UserError

log = logging.getLogger(__name__)

WEIGHTS_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1


def _features_only(state: dict, source: str) -> dict:
    """The ``features`` part of a torchvision VGG16 state dict, a features-only state dict,
    or the backbone of one of this recipe's checkpoints."""
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a trainer checkpoint
    for prefix in ("features.", "backbone.", ""):
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if prefix and picked:
            return picked
        if not prefix and all(k.split(".")[0].isdigit() for k in picked):
            return picked
    shown = ", ".join(list(state)[:3])
    raise UserError(
        f"{source} is not a VGG16 state dict (keys {shown}, ...); pass torchvision's "
        f"{WEIGHTS_FILE} or a state dict whose keys start with features."
    )


def pretrained_backbone_state(weights: str | None) -> dict:
    """ImageNet VGG16 convolution weights: from ``weights`` if given, else from torchvision
    (its cache, or a download)."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"model.weights={weights}: no such file; pass a VGG16 state dict")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
            raise UserError(f"model.weights={weights} cannot be read as a state dict: {exc}") \
                from None
        return _features_only(state, f"model.weights={weights}")
    from torchvision.models import VGG16_Weights

    try:
        state = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except OSError as exc:  # URLError, DNS failure, refused connection
        raise UserError(
            f"the ImageNet VGG16 weights ({WEIGHTS_FILE}, 528 MB) are not in torch's cache "
            f"({torch.hub.get_dir()}/checkpoints) and cannot be downloaded ({exc}). On a machine "
            "with internet run: python -c \"from torchvision.models import vgg16, VGG16_Weights; "
            "vgg16(weights=VGG16_Weights.IMAGENET1K_V1)\" and copy the file into that folder or "
            "pass model.weights=PATH; or set model.pretrained=false to train from random "
            "weights (not transfer learning)"
        ) from None
    return _features_only(state, WEIGHTS_FILE)


class VGG16Transfer(nn.Module):
    """VGG16 ``features`` (13 conv layers) -> global average pool -> dropout -> new head.

    Args:
        num_classes: classes in the data (from the data); 2 gives one logit (task=binary).
        pretrained: start the backbone from ImageNet weights (false: random, on purpose).
        weights: a local VGG16 state dict to use instead of torchvision's download.
        dropout: dropout probability before the head.
    """

    def __init__(self, num_classes: int = 2, pretrained: bool = True,
                 weights: str | None = None, dropout: float = 0.2) -> None:
        super().__init__()
        from torchvision.models import vgg16

        if num_classes < 2:
            raise UserError(f"VGG16Transfer needs at least 2 classes, got {num_classes}")
        if not 0 <= dropout < 1:
            raise UserError(f"model.dropout={dropout} must be in [0, 1)")
        self.backbone = vgg16(weights=None).features
        self.pretrained, self.weights = pretrained, weights
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(512, 1 if num_classes == 2 else num_classes)

    def load_pretrained(self) -> None:
        """Load the ImageNet backbone (the trainer calls this when a run is built; a model
        rebuilt from a checkpoint, as by trainer-predict, gets its weights from there)."""
        if self.pretrained or self.weights:
            self.backbone.load_state_dict(pretrained_backbone_state(self.weights))
        else:
            log.warning("model.pretrained=false: VGG16's backbone starts from random weights; "
                        "this trains a VGG16 from scratch, it is not transfer learning")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.backbone(x)).flatten(1)
        out = self.head(self.dropout(x))
        return out.squeeze(1) if out.shape[1] == 1 else out
