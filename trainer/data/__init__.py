"""A run's data: splits in memory (batches by slicing) or any map-style Dataset (batches read
in DataLoader workers), and the loader that shards and orders both alike."""

from trainer.data.datasets import Datasets, DatasetSplit
from trainer.data.memory import InMemoryData, InMemoryLoader, TensorSplit

__all__ = ["Datasets", "DatasetSplit", "InMemoryData", "InMemoryLoader", "TensorSplit"]
