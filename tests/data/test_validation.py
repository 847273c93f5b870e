"""The validation split: held-out rows chosen by seed and class, the same on any number of
workers and after a resume; evaluations during training read it, never the test split."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tests.helpers import compose_config
from tests.helpers.config import ROOT
from tests.helpers.runs import finish, launch
from tests.helpers.splits import Numbered, NumberedData, RecordReads
from trainer.data.datasets import DatasetSplit
from trainer.data.memory import TensorSplit
from trainer.data.validation import hold_out, origin
from trainer.errors import UserError

# 120 training rows of 3 classes, 45 test rows, 4 float64 features: 12 validation rows.
ROWS = ["trainer.dtype=float64", "model.in_features=4", "model.hidden=[8]",
        "model.num_classes=3", "data.batch_size=12", "data.eval_batch_size=20",
        "trainer.epochs=2", "logger.tensorboard=false", "logger.sample_predictions=0"]
CONFIGURED = ["data._target_=tests.helpers.splits.NumberedData", "~data.root",
              "~data.test_fraction", "+callbacks.rows._target_=tests.helpers.splits.RecordReads"]


def test_the_held_out_rows_are_a_seeded_share_of_each_class():
    labels = torch.arange(60000) % 10
    labels[:37] = 3  # classes of unequal sizes
    split = TensorSplit(torch.arange(60000)[:, None], labels)
    train, val, by_class = hold_out(split, 0.0833333333, seed=0)
    assert by_class and (len(train), len(val)) == (55000, 5000)  # MNIST's usual split
    assert set(val.rows.tolist()).isdisjoint(train.rows.tolist())
    assert sorted(val.rows.tolist() + train.rows.tolist()) == list(range(60000))
    assert torch.equal(val.inputs[:, 0], val.rows)  # each row is the row it says it is
    # Each class gives its share (within one row: largest remainders).
    share = val.targets.bincount() / labels.bincount()
    assert (share - 5000 / 60000).abs().max() < 1 / 5000
    again = hold_out(split, 0.0833333333, seed=0)[1]
    other = hold_out(split, 0.0833333333, seed=1)[1]
    assert torch.equal(again.rows, val.rows) and not torch.equal(other.rows, val.rows)


def test_a_dataset_is_held_out_by_its_targets_else_at_random_naming_its_own_rows():
    data = Numbered(50, "train")
    train, val, by_class = hold_out(DatasetSplit(data), 0.2, seed=0)
    assert by_class and len(val) == 10 and val.dataset.targets.bincount().tolist() == [4, 3, 3]
    rows = [origin(val, i) for i in range(len(val))]
    assert [int(val[i][0][0] * 50) for i in range(len(val))] == rows  # the row itself
    del data.targets
    _, plain, by_class = hold_out(DatasetSplit(data), 0.2, seed=0)
    assert not by_class and len(plain) == 10


@pytest.mark.parametrize("fraction,said", [(0.001, "leaves no validation row"),
                                           (0.999, "leaves no training row")])
def test_a_share_that_leaves_a_split_empty_is_one_line(fraction, said):
    with pytest.raises(UserError, match=f"data.val_fraction={fraction} of the 120 training rows "
                                        f"{said}"):
        hold_out(DatasetSplit(Numbered(120, "train")), fraction, seed=0)


def _fit(run_dir, *overrides, data=None):
    import trainer

    record = RecordReads()
    metrics = trainer.fit([*ROWS, *overrides], data=data or NumberedData(),
                          callbacks=[record], run_dir=run_dir)
    return metrics, json.loads((run_dir / "rows-rank0.json").read_text())


def test_training_reads_train_rows_evaluations_validation_rows_and_the_test_split_once(tmp_path):
    metrics, rows = _fit(tmp_path / "r", "callbacks.best_checkpoint.monitor=val/loss",
                         "callbacks.best_checkpoint.mode=min", "optimizer.lr=0.5")
    train, val = set(rows["train_rows"]), set(rows["val_rows"])
    assert len(val) == 12 and train.isdisjoint(val) and train | val == set(range(120))
    assert set(rows["trained_on"]) <= train and set(rows["evaluated_on"]) == val
    assert rows["test_reads_in_training"] == 0  # no evaluation before the end reads the test
    # The end: the final model on the 45 test rows, and best.pt's weights where they differ.
    tested = 1 if metrics["best_step"] == metrics["steps"] else 2
    assert rows["test_reads"] == 45 * tested
    assert metrics["val_loss"] is not None and metrics["history"][-1]["val/loss"] is not None
    assert "eval/loss" not in metrics["history"][-1]
    for key in ("accuracy", "loss"):
        assert f"test_{key}" in metrics and f"best_test_{key}" in metrics


def test_a_validation_dataset_of_its_own_is_used_and_nothing_is_held_out(tmp_path):
    _, rows = _fit(tmp_path / "r", data=NumberedData(val=30))
    assert rows["train_rows"] == list(range(120)) and rows["val_rows"] == list(range(30))
    assert rows["test_reads_in_training"] == 0


def test_without_a_validation_split_selection_is_on_the_training_loss(tmp_path, capsys):
    metrics, rows = _fit(tmp_path / "r", "data.val_fraction=0",
                         "callbacks=[default,early_stopping]")
    assert rows["val_rows"] == [] and rows["train_rows"] == list(range(120))
    assert rows["test_reads_in_training"] == 0
    assert metrics["best_metric"] == "train/epoch_loss"
    assert "validation: none (data.val_fraction=0)" in capsys.readouterr().out


def test_the_split_is_the_same_after_a_resume_and_a_changed_share_is_not_used(tmp_path, caplog):
    _, first = _fit(tmp_path / "r", "trainer.epochs=1")
    metrics, resumed = _fit(tmp_path / "r", "trainer.epochs=2", "data.val_fraction=0.3")
    assert metrics["resumed_from"] and resumed["val_rows"] == first["val_rows"]
    assert "data.val_fraction=0.3 is not used: a resumed run keeps the validation split it " \
           "started with (0.1)" in caplog.text


def test_two_workers_hold_out_the_rows_one_worker_does(tmp_path):
    _, one = _fit(tmp_path / "one")
    proc = launch("torchrun", 2, *ROWS, *CONFIGURED, f"hydra.run.dir={tmp_path}/two",
                  cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})  # (tests.helpers)
    _, err = finish(proc, timeout=240)
    assert proc.returncode == 0, err[-3000:]
    for rank in (0, 1):
        two = json.loads((tmp_path / "two" / f"rows-rank{rank}.json").read_text())
        assert (two["train_rows"], two["val_rows"]) == (one["train_rows"], one["val_rows"])
        assert set(two["trained_on"]) <= set(one["train_rows"])
        assert two["test_reads_in_training"] == 0
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["history"][0]["val/loss"] is not None


def test_a_checkpoint_from_before_validation_splits_resumes_on_all_its_rows(tmp_path, caplog):
    _fit(tmp_path / "r", "trainer.epochs=1", "data.val_fraction=0")
    last = tmp_path / "r" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["config"]["data"]["val_fraction"]  # written before the key existed
    for name in ("best_checkpoint",):
        state["callbacks"][name].pop("metric")
    torch.save(state, last)
    metrics, rows = _fit(tmp_path / "r", "trainer.epochs=2")
    assert rows["train_rows"] == list(range(120)) and rows["val_rows"] == []
    assert "keeps the validation split it started with (0)" in caplog.text
    assert metrics["best_metric"] == "train/epoch_loss"


def test_bad_shares_are_refused_before_the_run():
    from trainer.config.validate import validate

    for bad in ("-0.1", "1", "1.5"):
        with pytest.raises(UserError, match=f"data.val_fraction={bad} is invalid: use a share"):
            validate(compose_config(f"data.val_fraction={bad}"))
