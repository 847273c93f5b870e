"""NYT headlines as next-word prediction pairs, with the seed's Keras-style tokenizer.

Every ``Articles*.csv`` in ``data.root`` contributes its ``headline`` column (the literal
"Unknown" is dropped). Each headline w1..wn gives n-1 pairs: the prefix w1..wi, pre-padded with
0 to the longest prefix, and the next word w(i+1) as the target. Headlines (not pairs) are split
into train and test, so no test headline is ever partly seen in training.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch

from trainer.data import InMemoryData, TensorSplit
from trainer.errors import UserError
from trainer_recipes.headlines.generate import generate
from trainer_recipes.headlines.tokenizer import OOV, Tokenizer, words  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

def read_headlines(root: Path) -> list[str]:
    files = sorted(root.glob("Articles*.csv"))
    if not files:
        raise UserError(
            f"no Articles*.csv in {root}: put the NYT comments data set's article files there "
            "(Kaggle aashita/nyt-comments) or run offline with data.synthetic=true"
        )
    headlines = []
    for path in files:
        headlines += _read_one(path)
    return headlines


def _read_one(path: Path) -> list[str]:
    # strict: a quote left open is an error at the end of the file, not one huge field.
    with path.open(newline="", encoding="utf-8") as f:
        try:
            reader = csv.DictReader(f, strict=True)
            if "headline" not in (reader.fieldnames or []):
                raise UserError(
                    f"{path} has no 'headline' column (columns: "
                    f"{', '.join((reader.fieldnames or [])[:6])}...); each Articles*.csv needs one"
                )
            return [row["headline"] for row in reader if row["headline"] != "Unknown"]
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: byte {exc.start} is not UTF-8 ({exc.reason}); save the "
                            "file as UTF-8") from None
        except csv.Error as exc:
            raise UserError(f"{path}: line {reader.line_num} is not valid CSV ({exc}); a quote "
                            "left open swallows every line after it, close it") from None


def make_pairs(sequences: list[list[int]], max_len: int) -> TensorSplit:
    """Every prefix of each sequence, pre-padded to max_len - 1, with its next word."""
    inputs, targets = [], []
    for seq in sequences:
        for i in range(1, min(len(seq), max_len)):
            prefix = seq[:i]
            inputs.append([0] * (max_len - 1 - len(prefix)) + prefix)
            targets.append(seq[i])
    if not inputs:
        return TensorSplit(torch.zeros(0, max_len - 1, dtype=torch.long),
                           torch.zeros(0, dtype=torch.long))
    return TensorSplit(torch.tensor(inputs), torch.tensor(targets))


_SUBJECTS = ["trump", "the senate", "a new study", "the city", "china", "the court", "voters",
             "scientists", "the market", "a mayor"]
_VERBS = ["says", "warns", "plans", "rejects", "backs", "faces", "weighs", "delays"]
_OBJECTS = ["new tax plan", "health care bill", "trade deal", "climate rules", "budget cuts",
            "school reform", "travel ban", "election results"]


def write_synthetic_articles(folder: Path, n: int = 600, seed: int = 0) -> Path:
    """Small ArticlesSynthetic.csv files in the real format (headline column among others),
    with headlines from a tiny grammar. Not news; for offline runs and tests."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(seed)
    for part in range(2):
        with (folder / f"ArticlesSynthetic{part}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["articleID", "headline", "pubDate"])
            for i in range(n // 2):
                s, v, o = (gen.choice(x) for x in (_SUBJECTS, _VERBS, _OBJECTS))
                writer.writerow([f"{part}-{i}", f"{s.title()} {v.title()} {o.title()}", "2017"])
            writer.writerow([f"{part}-x", "Unknown", "2017"])
    return folder


class HeadlinesData(InMemoryData):
    """Next-word pairs from NYT headlines.

    Args:
        root: folder with the Articles*.csv files.
        max_words: vocabulary cap (null: every word).
        test_fraction: share of headlines held out for test perplexity.
        synthetic: ignore ``root`` and generate small files of the same format.
        seed: which headlines go to the test split.
    """

    class_names: list[str] = []

    def __init__(self, root: str, max_words: int | None = None, test_fraction: float = 0.1,
                 synthetic: bool = False, synthetic_dir: str | None = None,
                 seed: int = 0) -> None:
        if not 0.0 < test_fraction < 1.0:
            raise UserError(f"data.test_fraction={test_fraction} must be in (0, 1)")
        if synthetic:
            import tempfile

            folder = write_synthetic_articles(Path(synthetic_dir or tempfile.mkdtemp()))
        else:
            folder = Path(root).expanduser()
        headlines = read_headlines(folder)
        self.tokenizer = Tokenizer.fit(headlines, max_words)
        sequences = [s for s in (self.tokenizer.encode(h) for h in headlines) if len(s) >= 2]
        if not sequences:
            raise UserError(
                f"no headline in {folder} has two or more words after tokenizing: there is "
                "nothing to predict; check the headline column"
            )
        self.max_len = max(len(s) for s in sequences)
        order = np.random.default_rng(seed).permutation(len(sequences))
        n_test = max(1, round(len(sequences) * test_fraction))
        test_ids, train_ids = set(order[:n_test].tolist()), order[n_test:].tolist()
        self.train = make_pairs([sequences[i] for i in train_ids], self.max_len)
        self.test = make_pairs([sequences[i] for i in sorted(test_ids)], self.max_len)
        self.class_names = self.tokenizer.words
        what = ("SYNTHETIC headlines from a tiny grammar in the NYT Articles*.csv format (NOT "
                "news)" if synthetic else f"NYT headlines from {folder}")
        self.description = (
            f"{what}: {len(headlines):,} headlines, vocabulary {len(self.tokenizer) - 1:,} "
            f"words, {len(self.train):,} train / {len(self.test):,} test next-word pairs"
        )

    @staticmethod
    def transform(inputs: torch.Tensor) -> torch.Tensor:
        return inputs

    def model_kwargs(self) -> dict:
        return {"vocab_size": len(self.tokenizer)}

    def sample_texts(self, model: torch.nn.Module) -> list[str]:
        seeds = [self.tokenizer.words[i] for i in range(1, min(5, len(self.tokenizer)))]
        return [generate(model, self.tokenizer, self.max_len, seed, words=6,
                         strategy="greedy") for seed in seeds]

    def state_dict(self) -> dict:
        """What generation needs without the CSVs: saved in every checkpoint."""
        return {"index": self.tokenizer.index, "max_len": self.max_len}
