"""Data sets held in memory and the loader that batches them by slicing."""

from trainer.data.memory import InMemoryData, InMemoryLoader, TensorSplit

__all__ = ["InMemoryData", "InMemoryLoader", "TensorSplit"]
