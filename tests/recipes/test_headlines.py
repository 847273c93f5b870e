"""The headline recipe: tokenizer, next-word pairs, training, generation and its CLI."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import subprocess
import sys

import pytest
import torch

from tests.helpers import SHARED_DATA, run, train_in_process
from trainer.errors import UserError
from trainer_recipes.headlines.data import (
    OOV,
    HeadlinesData,
    Tokenizer,
    make_pairs,
    read_headlines,
    write_synthetic_articles,
)
from trainer_recipes.headlines.generate import beam_search, generate, next_log_probs
from trainer_recipes.headlines.model import HeadlineLSTM

SYNTHETIC = ("recipe=headlines", "data.synthetic=true")


def test_tokenizer_follows_keras_filters_case_and_frequency_order():
    tok = Tokenizer.fit(["Trump's Tax-Plan: A Plan!", "a plan (b)", "B b"])
    # '-' ':' '!' '(' ')' break words; the apostrophe is not a Keras filter character.
    assert tok.encode("PLAN-a") == [tok.index["plan"], tok.index["a"]]
    assert list(tok.index) == ["plan", "b", "a", "trump's", "tax"]  # 3, 3, 2, 1, 1; ties: first
    assert tok.index["plan"] == 1 and len(tok) == 6  # 0 is padding
    capped = Tokenizer.fit(["x y y z z z"], max_words=2)
    assert capped.index == {OOV: 1, "z": 2} and capped.encode("y z q") == [1, 2, 1]


def test_pairs_are_every_prefix_pre_padded_with_the_next_word():
    split = make_pairs([[5, 6, 7], [8, 9]], max_len=4)
    assert split.inputs.tolist() == [[0, 0, 5], [0, 5, 6], [0, 0, 8]]
    assert split.targets.tolist() == [6, 7, 9]


def test_csv_without_headline_column_and_empty_vocabulary_are_named(tmp_path):
    bad = tmp_path / "ArticlesJan2017.csv"
    bad.write_text("articleID,title\n1,Hello\n")
    with pytest.raises(UserError, match=rf"{bad} has no 'headline' column"):
        read_headlines(tmp_path)
    bad.write_text('articleID,headline\n1,"!!! ???"\n2,Unknown\n')
    with pytest.raises(UserError, match="empty vocabulary"):
        HeadlinesData(str(tmp_path))
    bad.write_text("articleID,headline\n1,Hello\n2,World!\n")
    with pytest.raises(UserError, match="has two or more words"):
        HeadlinesData(str(tmp_path))
    with pytest.raises(UserError, match=r"no Articles\*.csv in .*data.synthetic=true"):
        HeadlinesData(str(tmp_path / "nowhere"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("headlines")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        metrics = train_in_process(folder / "run", *SYNTHETIC, "trainer.epochs=6",
                                   f"data.synthetic_dir={folder / 'data'}")
    (folder / "printed.txt").write_text(printed.getvalue())
    return folder, metrics


def test_synthetic_training_lowers_perplexity(trained):
    _, metrics = trained
    perplexity = [h["val/perplexity"] for h in metrics["history"]]
    assert perplexity[-1] < 0.5 * perplexity[0]
    assert metrics["val_perplexity"] == pytest.approx(perplexity[-1])
    assert metrics["test_perplexity"] == pytest.approx(math.exp(metrics["test_loss"]))


def _model_and_tokenizer(folder):
    state = torch.load(folder / "run" / "checkpoints" / "last.pt", weights_only=True)
    tok = Tokenizer(state["data"]["index"])
    model = HeadlineLSTM(len(tok))
    model.load_state_dict(state["model"])
    return model.eval(), tok, state["data"]["max_len"]


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_generation_returns_only_vocabulary_words(trained, strategy):
    model, tok, max_len = _model_and_tokenizer(trained[0])
    text = generate(model, tok, max_len, "the senate", words=8, strategy=strategy,
                    temperature=1.5, top_k=20, generator=torch.Generator().manual_seed(0))
    new = text.lower().split()[2:]
    assert len(new) == 8 and all(w in tok.index and w != OOV for w in new)
    assert text == text.title() and text.startswith("The Senate ")


def test_beam_search_returns_its_most_probable_beam(trained):
    model, tok, max_len = _model_and_tokenizer(trained[0])
    seed = tok.encode("the city")
    beams = beam_search(model, seed, max_len, words=4, width=4, banned=[0])
    assert len(beams) == 4

    def total(new):  # recomputed word by word, independently of the search
        return sum(float(next_log_probs(model, seed + new[:i], max_len, [0])[w])
                   for i, w in enumerate(new))

    totals = [total(new) for new, _ in beams]
    assert totals == pytest.approx([score for _, score in beams], abs=1e-4)
    assert totals[0] == max(totals)


def test_unknown_seed_text_warns_and_still_generates(trained, caplog):
    model, tok, max_len = _model_and_tokenizer(trained[0])
    with caplog.at_level(logging.WARNING):
        text = generate(model, tok, max_len, "qwzx", words=3)
    assert "has no word of the vocabulary" in caplog.text and len(text.split()) == 4


def test_generate_command_prints_seed_plus_words(trained):
    folder, _ = trained
    result = subprocess.run(
        [sys.executable, "-m", "trainer_recipes.headlines.generate", str(folder / "run"), "voters",
         "--words", "5", "--strategy", "beam", "--beam-width", "3"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("Voters ") and len(line.split()) == 6


def test_the_recipe_keeps_its_best_perplexity_and_generate_uses_it(trained):
    folder, metrics = trained
    history = metrics["history"]
    best = min(history, key=lambda h: h["val/perplexity"])
    assert (metrics["best_metric"], metrics["best_step"]) == ("val/perplexity", best["step"])
    # Chosen on validation perplexity; the test split read once: both models' perplexity.
    assert all("test/perplexity" not in h and "eval/perplexity" not in h for h in history)
    closing = (folder / "printed.txt").read_text()
    assert f"test, final model (step {metrics['steps']}): " \
           f"accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}, " \
           f"perplexity {metrics['test_perplexity']:.4f}" in closing
    assert f"test, best.pt (step {best['step']}): " in closing
    assert f"perplexity {metrics['best_test_perplexity']:.4f}" in closing
    outputs = []
    for where in (folder / "run", folder / "run" / "checkpoints" / "best.pt"):
        result = subprocess.run(
            [sys.executable, "-m", "trainer_recipes.headlines.generate", str(where), "voters",
             "--words", "4"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]  # a run directory means its best.pt


def test_headlines_run_on_two_gloo_workers(tmp_path):
    run("torchrun", 2, *SYNTHETIC, "trainer.max_steps=6", "trainer.checkpoint_every=3",
        f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert '"world_size": 2' in (tmp_path / "run" / "metrics.json").read_text()


@pytest.mark.slow
def test_real_nyt_headlines_perplexity_falls_over_an_epoch(tmp_path):
    folder = SHARED_DATA / "nyt_dataset" / "articles"
    if not list(folder.glob("Articles*.csv")):
        pytest.skip(f"no NYT Articles*.csv in {folder}")
    metrics = train_in_process(tmp_path, "recipe=headlines", f"data.root={folder}",
                               "trainer.epochs=1", "trainer.eval_every=60")
    perplexity = [h["val/perplexity"] for h in metrics["history"]]
    vocab = len(torch.load(tmp_path / "checkpoints" / "last.pt",
                           weights_only=True)["data"]["index"])
    # An untrained model scores about the vocabulary size (~11,750); after 60 steps it is
    # already far below, and it keeps falling through the epoch.
    assert len(perplexity) >= 5 and perplexity[0] < 0.3 * vocab
    assert perplexity[-1] < 0.95 * perplexity[0]


def test_synthetic_files_use_the_real_format(tmp_path):
    folder = write_synthetic_articles(tmp_path, n=20)
    with next(folder.glob("Articles*.csv")).open() as f:
        rows = list(csv.DictReader(f))
    assert "headline" in rows[0] and rows[-1]["headline"] == "Unknown"
