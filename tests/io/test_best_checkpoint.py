"""checkpoints/best.pt: the best evaluation's weights, kept apart from pruning, recorded in
metrics.json, used by the checkpoint commands given a run directory, and only this run's."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import train_in_process
from trainer.engine.inference import load_trusted

# Digits MLP, 60 steps, an evaluation every 10; one checkpoint kept.
RUN = ("trainer.max_steps=60", "trainer.eval_every=10", "trainer.checkpoint_every=10",
       "trainer.keep_last=1", "logger.sample_predictions=0", "logger.tensorboard=false")
# "Best" = the LOWEST accuracy: the first evaluation, so best.pt is not the last checkpoint.
WORST_FIRST = ("callbacks.best_checkpoint.monitor=val/accuracy",
               "callbacks.best_checkpoint.mode=min")


def _history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "metrics.json").read_text())["history"]


def test_best_is_the_best_evaluation_and_survives_pruning(tmp_path):
    metrics = train_in_process(tmp_path, *RUN, *WORST_FIRST)
    history = _history(tmp_path)
    best = min(history, key=lambda h: h["val/accuracy"])
    assert best["step"] < 60  # so best.pt differs from the last checkpoint
    assert (metrics["best_step"], metrics["best_value"]) == (best["step"], best["val/accuracy"])
    assert metrics["best_metric"] == "val/accuracy"
    folder = tmp_path / "checkpoints"
    record = json.loads((folder / "best.json").read_text())
    assert record == {"step": best["step"], "metric": "val/accuracy",
                      "value": best["val/accuracy"]}
    # keep_last=1 pruned every other step file; best.pt stays, last.pt is the last step.
    assert sorted(p.name for p in folder.glob("step-*.pt")) == ["step-00000060.pt"]
    saved = torch.load(folder / "best.pt", weights_only=True)
    assert saved["progress"]["step"] == best["step"]
    last = torch.load(folder / "last.pt", weights_only=True)
    assert any(not torch.equal(saved["model"][k], last["model"][k]) for k in last["model"])


def test_commands_use_best_pt_for_a_run_directory_and_last_on_request(tmp_path):
    metrics = train_in_process(tmp_path, *RUN, *WORST_FIRST)
    assert load_trusted(tmp_path)[1]["progress"]["step"] == metrics["best_step"] < 60
    assert load_trusted(tmp_path, last=True)[1]["progress"]["step"] == 60
    assert load_trusted(tmp_path / "checkpoints" / "step-00000060.pt")[1]["progress"]["step"] == 60


def test_a_resumed_run_keeps_its_best_and_a_fresh_start_moves_it_aside(tmp_path):
    train_in_process(tmp_path, *RUN, *WORST_FIRST, "trainer.max_steps=30")
    first = json.loads((tmp_path / "checkpoints" / "best.json").read_text())
    metrics = train_in_process(tmp_path, *RUN, *WORST_FIRST)  # resumes at 30, runs to 60
    assert metrics["resumed_from"] and metrics["best_step"] == first["step"] == min(
        _history(tmp_path), key=lambda h: h["val/accuracy"])["step"]
    # Starting over: the old run's best.pt is not this run's; it is moved aside.
    metrics = train_in_process(tmp_path, *RUN, "trainer.resume=null", "trainer.max_steps=10")
    replaced = list(tmp_path.glob("checkpoints.replaced-*/best.pt"))
    assert len(replaced) == 1
    record = json.loads((tmp_path / "checkpoints" / "best.json").read_text())
    assert record["step"] == metrics["best_step"] == 10


def test_a_metric_the_task_lacks_means_no_best_and_one_warning(tmp_path, caplog):
    metrics = train_in_process(tmp_path, *RUN, "callbacks.best_checkpoint.monitor=val/nope",
                               "trainer.max_steps=20")
    assert not (tmp_path / "checkpoints" / "best.pt").exists() and "best_step" not in metrics
    said = [r.message for r in caplog.records if "no best checkpoint" in r.message]
    assert len(said) == 1 and "val/nope" in said[0]
