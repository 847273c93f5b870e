"""Typed schemas for the ASL recipe's model and data options."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from trainer.config.schema import ModelConfig, OfflineDataConfig


@dataclass
class ASLCNNConfig(ModelConfig):
    in_channels: int = 1
    num_classes: int = 24
    image_size: int = 28


@dataclass
class SignMNISTDataConfig(OfflineDataConfig):
    # Rotation 10 degrees, zoom 0.1, shifts 0.1, horizontal flip; training batches only.
    augment: bool = True


def register(store: ConfigStore) -> None:
    store.store(group="schema/model", name="asl_cnn", node=ASLCNNConfig)
    store.store(group="schema/data", name="sign_mnist", node=SignMNISTDataConfig)
