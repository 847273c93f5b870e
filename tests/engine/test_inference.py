"""A trained model at work: trainer.evaluate / trainer.predict in Python and trainer-evaluate /
trainer-predict on the command line, for a user's own run (the example project's dict batches,
two inputs, two outputs and its own task) and for in-memory data, on 1 and 2 workers."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys

import pytest
import torch

import trainer
from tests.helpers import FLOAT64, train_in_process
from tests.helpers.user_project import ENV, PROJECT, SEARCHPATH, torchrun

LOCATE = (SEARCHPATH, "recipe=shapes_locate", "optimizer=sgd", "trainer.max_steps=8",
          "logger.sample_predictions=0", FLOAT64, "logger.progress_bar=false")
EQUAL = 1e-12  # float64 sums over the same rows, in another order on 2 workers


@pytest.fixture(scope="module")
def located(tmp_path_factory):
    """The example project's located run, trained in this process; its package importable."""
    sys.path.insert(0, str(PROJECT))
    folder = tmp_path_factory.mktemp("located")
    metrics = train_in_process(folder / "run", *LOCATE)
    yield folder / "run", metrics
    sys.path.remove(str(PROJECT))
    for name in [m for m in sys.modules if m == "shapes" or m.startswith("shapes.")]:
        del sys.modules[name]


def _main(module, *argv: str) -> tuple[int, str, str]:
    """A tool's main() in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            module.main(list(argv))
        except SystemExit as exc:
            code = exc.code or 0
    return code, out.getvalue(), err.getvalue()


def test_evaluate_a_users_run_gives_the_numbers_training_reported(located):
    run, trained = located
    again = trainer.evaluate(run, last=True, trust=["shapes"])
    for name in ("accuracy", "loss", "center_mse"):  # the project's own metric too
        assert abs(again[f"test_{name}"] - trained[f"test_{name}"]) < EQUAL, name
    best = trainer.evaluate(run, trust=["shapes"])  # best.pt, the best evaluation's weights
    assert set(best) == set(again)
    on_train = trainer.evaluate(run, split="train", last=True, trust=["shapes"])
    assert set(on_train) == {"train_accuracy", "train_loss", "train_center_mse"}


def test_evaluate_and_predict_with_the_callers_own_objects(located):
    """A trainer.fit run's checkpoint names its objects' classes, not their arguments: the
    caller gives them again; a single Dataset is the rows to use."""
    run, trained = located
    from shapes.data import ShapeFields
    from shapes.model import TwoInputCNN
    from shapes.tasks import ClassifyAndLocate

    test = ShapeFields(128, seed=1, center=True)
    # (What the caller gives is never built from the file: no --trust needed for it.)
    given = trainer.evaluate(run, model=TwoInputCNN(locate=True), task=ClassifyAndLocate(),
                             data=test, last=True)
    assert abs(given["dataset_center_mse"] - trained["test_center_mse"]) < EQUAL
    rows = trainer.predict(run, ShapeFields(16, seed=1, center=True), last=True,
                           trust=["shapes"])
    split = trainer.predict(run, last=True, trust=["shapes"])
    assert len(split) == 128 and rows == split[:16]  # item i is drawn from (seed, i) alone
    # The task's predict(outputs): the class; the targets as the task's forward gave them.
    assert {"index", "prediction", "class", "target.label", "target.center"} <= set(rows[0])
    assert rows[0]["class"] == ["circle", "square"][rows[0]["prediction"]]
    hits = sum(r["prediction"] == r["target.label"] for r in split)
    assert abs(hits / 128 - trained["test_accuracy"]) < EQUAL


def test_the_tools_on_two_workers_give_one_workers_numbers_and_rows(located, tmp_path):
    from trainer.tools import evaluate as evaluate_tool
    from trainer.tools import predict as predict_tool

    run, trained = located
    code, out, err = _main(evaluate_tool, str(run), "--last", "--trust", "shapes",
                           "--output", str(tmp_path / "one.json"))
    assert code == 0, err
    assert "step 8), test: loss" in out and "center_mse" in out
    code, _, err = _main(predict_tool, str(run), "--last", "--trust", "shapes",
                         "--output", str(tmp_path / "one.csv"))
    assert code == 0, err
    env = {**os.environ, **ENV}
    for tool, output in (("evaluate", "two.json"), ("predict", "two.csv")):
        done = subprocess.run(
            [*torchrun(2), "-m", f"trainer.tools.{tool}", str(run), "--last", "--trust",
             "shapes", "--output", str(tmp_path / output), "dist.threads_per_worker=1"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert abs(one["test_center_mse"] - trained["test_center_mse"]) < EQUAL
    assert all(abs(one[k] - two[k]) < EQUAL for k in one) and set(one) == set(two)
    with (tmp_path / "one.csv").open() as f1, (tmp_path / "two.csv").open() as f2:
        first, second = list(csv.DictReader(f1)), list(csv.DictReader(f2))
    assert len(first) == 128 and [r["prediction"] for r in first] == \
        [r["prediction"] for r in second]
    assert max(abs(float(a["target.center"].strip("[]").split(",")[0])
                   - float(b["target.center"].strip("[]").split(",")[0]))
               for a, b in zip(first, second, strict=True)) == 0


def test_rows_of_raw_inputs_from_python_and_from_a_file(tmp_path):
    """In-memory data (the digits default): a tensor of raw rows goes through the data's own
    transform, as the split's rows do; from a .csv (one flat row each) or a .pt file."""
    from trainer.tools import predict as predict_tool
    from trainer_recipes.mnist.data import DigitsData

    run = tmp_path / "digits"
    train_in_process(run, "trainer.max_steps=10", "logger.progress_bar=false", FLOAT64)
    raw = DigitsData().test.inputs[:5]
    split = trainer.predict(run)
    rows = trainer.predict(run, raw)
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in split[:5]]
    assert all(abs(a["probability"] - b["probability"]) < EQUAL
               for a, b in zip(rows, split, strict=False))
    assert "target" not in rows[0] and rows[0]["class"] == str(rows[0]["prediction"])
    flat = tmp_path / "rows.csv"
    flat.write_text(",".join(f"p{i}" for i in range(64)) + "\n" + "\n".join(
        ",".join(str(int(v)) for v in row.flatten()) for row in raw) + "\n")
    torch.save(raw, tmp_path / "rows.pt")
    for name in ("rows.csv", "rows.pt"):
        code, out, err = _main(predict_tool, str(run), "--rows", str(tmp_path / name),
                               "--output", str(tmp_path / f"{name}.jsonl"))
        assert code == 0, err
        got = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        assert [r["prediction"] for r in got] == [r["prediction"] for r in rows]


@pytest.mark.parametrize(("args", "line"), [
    (("--split", "valid"), "split='valid' is not a split of the run's data; use train, val, test"),
    (("data.eval_batchsize=64",), "data.eval_batchsize: the checkpoint's config has no such "
                                  "key (only the training run's keys can be changed); did you "
                                  "mean data.eval_batch_size?"),
    (("--rows", "missing.csv"), "--rows missing.csv: no such file"),
    (("--output", "rows.xlsx"), "--output rows.xlsx: use a .csv, .json or .jsonl file"),
])
def test_bad_arguments_are_one_line(located, args, line, tmp_path, monkeypatch):
    from trainer.tools import predict as predict_tool

    monkeypatch.chdir(tmp_path)
    code, out, err = _main(predict_tool, str(located[0]), "--trust", "shapes", *args)
    assert code == 2 and err == f"trainer-predict: error: {line}\n" and not out


def test_a_checkpoint_of_an_untrusted_package_and_a_missing_one_are_one_line(located, tmp_path):
    from trainer.tools import evaluate as evaluate_tool

    code, _, err = _main(evaluate_tool, str(located[0]))
    assert code == 2 and err.startswith("trainer-evaluate: error: ") and \
        "--trust shapes" in err and err.count("\n") == 1
    code, _, err = _main(evaluate_tool, str(tmp_path / "nothing"))
    assert code == 2 and "pass a checkpoint file or a run directory" in err
    code, _, err = _main(evaluate_tool, str(located[0]), "--trust", "shapes", "nothing")
    assert code == 2 and err == ("trainer-evaluate: error: 'nothing' is not an override: write "
                                 "KEY=VALUE, for example data.eval_batch_size=512\n")
