"""Typed schemas for the MNIST recipe's model and data options."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from trainer.config.schema import DataConfig, ModelConfig


@dataclass
class MLPConfig(ModelConfig):
    in_features: int = 784
    hidden: list[int] = field(default_factory=lambda: [512, 512])
    num_classes: int = 10
    dropout: float = 0.0
    # none | batch (BatchNorm after each hidden Linear)
    norm: str = "none"


@dataclass
class MNISTDataConfig(DataConfig):
    download: bool = True


@dataclass
class DigitsDataConfig(DataConfig):
    test_fraction: float = 0.2


def register(store: ConfigStore) -> None:
    store.store(group="schema/model", name="mlp", node=MLPConfig)
    store.store(group="schema/data", name="mnist", node=MNISTDataConfig)
    store.store(group="schema/data", name="digits", node=DigitsDataConfig)
