"""Typed schema for the ASL recipe's model option."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from trainer.config.schema import ModelConfig


@dataclass
class ASLCNNConfig(ModelConfig):
    in_channels: int = 1
    num_classes: int = 24
    image_size: int = 28


def register(store: ConfigStore) -> None:
    store.store(group="schema/model", name="asl_cnn", node=ASLCNNConfig)
