"""The seed's headline model: Embedding(vocab, 10) -> LSTM(100) -> Dropout(0.1) -> Linear."""

from __future__ import annotations

import torch
from torch import nn


class HeadlineLSTM(nn.Module):
    """Next-word logits from a pre-padded prefix of word indices (0 = padding).

    Args:
        vocab_size: words + 1 (padding); given by the data, not the config.
        embedding_dim: the seed's 10.
        hidden: LSTM units, the seed's 100.
        dropout: after the LSTM, the seed's 0.1.
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 10, hidden: int = 100,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, prefix: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(self.embedding(prefix))
        return self.out(self.dropout(states[:, -1]))
