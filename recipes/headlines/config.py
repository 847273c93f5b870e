"""Typed schemas for the headline recipe's model and data options."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from trainer.config.schema import ModelConfig, OfflineDataConfig


@dataclass
class HeadlineLSTMConfig(ModelConfig):
    embedding_dim: int = 10
    hidden: int = 100
    dropout: float = 0.1


@dataclass
class HeadlinesDataConfig(OfflineDataConfig):
    max_words: int | None = None
    test_fraction: float = 0.1
    seed: int = 0


def register(store: ConfigStore) -> None:
    store.store(group="schema/model", name="headline_lstm", node=HeadlineLSTMConfig)
    store.store(group="schema/data", name="headlines", node=HeadlinesDataConfig)
