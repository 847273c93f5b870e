"""Keras-style word tokenization for the headline recipe: the word index the data builds and
generation (trainer-generate) reads back from a checkpoint."""

from __future__ import annotations

import re
from collections import Counter

from trainer.errors import UserError

# Keras' Tokenizer default `filters`: these characters become word breaks.
KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
_BREAKS = re.compile("[" + re.escape(KERAS_FILTERS) + "]")
OOV = "<oov>"


def words(text: str) -> list[str]:
    """Keras' text_to_word_sequence: lower-case, filter characters to spaces, split."""
    return _BREAKS.sub(" ", text.lower()).split()


class Tokenizer:
    """Word index by descending frequency (ties: first seen first), 1-based; 0 pads.

    Args:
        max_words: keep this many most frequent words (null: all); the rest map to an OOV
            token (index 1) when a cap is set.
    """

    def __init__(self, index: dict[str, int]) -> None:
        self.index = index
        self.words = [""] * (max(index.values(), default=0) + 1)
        for word, i in index.items():
            self.words[i] = word

    @classmethod
    def fit(cls, texts: list[str], max_words: int | None = None) -> Tokenizer:
        counts = Counter()
        for text in texts:
            counts.update(words(text))
        ranked = [w for w, _ in sorted(counts.items(), key=lambda kv: -kv[1])]  # stable
        if not ranked:
            raise UserError("the headlines give an empty vocabulary: no words after filtering")
        if max_words is not None:
            ranked = [OOV, *ranked[: max_words - 1]]
        return cls({w: i + 1 for i, w in enumerate(ranked)})

    def __len__(self) -> int:
        """Vocabulary size including the padding index 0."""
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        oov = self.index.get(OOV)
        ids = [self.index.get(w, oov) for w in words(text)]
        return [i for i in ids if i is not None]

    def decode(self, ids: list[int]) -> list[str]:
        return [self.words[i] for i in ids]
