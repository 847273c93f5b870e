"""Typed schemas for the linear-regression recipe's model and data options."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from trainer.config.schema import DataConfig, ModelConfig


@dataclass
class LinearModelConfig(ModelConfig):
    in_features: int = 1


@dataclass
class LinearDataConfig(DataConfig):
    weights: list[float] = field(default_factory=lambda: [2.0])
    bias: float = 1.0
    noise_std: float = 1.0
    num_train: int = 8192
    num_test: int = 2048
    seed: int = 0


def register(store: ConfigStore) -> None:
    store.store(group="schema/model", name="linear", node=LinearModelConfig)
    store.store(group="schema/data", name="linear", node=LinearDataConfig)
