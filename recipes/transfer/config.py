"""Typed schemas for the VGG16 transfer recipe's model and data options."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from trainer.config.schema import ModelConfig, OfflineDataConfig


@dataclass
class VGG16TransferConfig(ModelConfig):
    # Start the backbone from torchvision's ImageNet weights (cache or download); false:
    # random weights, on purpose (not transfer learning; offline smoke runs).
    pretrained: bool = True
    # A local VGG16 state dict (torchvision's vgg16-397923af.pth) instead of the download.
    weights: str | None = None
    dropout: float = 0.2


@dataclass
class ImageFolderDataConfig(OfflineDataConfig):
    # Square size every image is resized to (224: what the ImageNet weights were trained at).
    image_size: int = 224
    # Rotation 10 degrees, zoom 0.1, shifts 0.1, horizontal flip; training batches only.
    augment: bool = True
    # DataLoader worker processes per training process that decode the images.
    workers: int = 2


def register(store: ConfigStore) -> None:
    store.store(group="schema/model", name="vgg16_transfer", node=VGG16TransferConfig)
    store.store(group="schema/data", name="image_folder", node=ImageFolderDataConfig)
