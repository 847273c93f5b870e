"""data.batch_size=auto, the goodput controller (trainer/callbacks/adaptive_batch.py): its
decisions are recorded and logged, a resumed run keeps them, and a recorded plan replays
exactly: resumed mid-epoch or on two workers, float64 equal to an unbroken one-process run."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import EXACT, max_difference, run, train_in_process, weights
from trainer.large_batch.batch_plan import BatchPlan, Decision

# The digits MLP (1,294 training rows), M0 = 32 up to 256, 2 micro-batches per step.
AUTO = ("data.batch_size=auto", "data.batch_size_min=32", "data.batch_size_max=256",
        "optimizer.scale_lr=adascale", "trainer.accumulate=2", "trainer.epochs=3",
        "trainer.log_every=4", "logger.sample_predictions=0", "logger.tensorboard=false")


def _plan(run_dir) -> BatchPlan:
    return BatchPlan.read(run_dir / "batch_plan.json")


def test_a_live_run_profiles_decides_on_its_own_step_times_and_records_every_change(tmp_path,
                                                                                    capsys):
    metrics = train_in_process(tmp_path, *AUTO)
    plan = _plan(tmp_path)
    assert plan.initial == 32
    profile, *decided = plan.decisions
    # The profile: 6 steps at M0, then the batch in the geometric middle of [32, 256].
    assert (profile.samples, profile.old, profile.new, profile.reason) == (192, 32, 90, "profile")
    # The first decision point is the profile's end: a decision there, or the batch kept.
    assert all(d.samples >= 192 + 6 * 90 for d in decided)
    for d in decided:  # each change says why, from what it measured
        assert 32 <= d.new <= 256 and d.new % 2 == 0  # whole micro-batches
        assert d.predicted_gain > 1.1 and d.noise_scale > 0 and d.model["beta"] >= 0
        assert d.reason.startswith(f"predicted goodput x{d.predicted_gain:.2f} at B_simple")
    assert metrics["batch_changes"] == len(plan.decisions)
    # Every decision point, taken or not (what trainer-report shows over training).
    trace = metrics["batch_trace"]
    assert trace and trace[0]["samples"] >= 192 + 6 * 90
    assert [t["best"] for t in trace if t["changed"]] == [d.new for d in decided]
    for t in trace:
        assert t["batch"] == plan.batch_at(t["samples"] - 1)  # the batch it decided from
        assert t["b_simple"] > 0 and t["gain"] >= 1 and t["lr"] > 0
        assert 0 < t["goodput"] <= t["best_goodput"]
    assert metrics["final_global_batch_size"] == plan.batch_at(10**9)
    assert metrics["global_batch_size"] == 32
    # AdaScale's progress, not the batch, decides the run's length: 3 base-batch epochs.
    assert metrics["adascale_progress_epochs"] == pytest.approx(3, abs=0.1)
    assert "batch: 32 -> 90 at step 6 (192 samples): profile" in capsys.readouterr().out


def test_a_resumed_live_run_keeps_its_plan_and_goes_on_deciding(tmp_path, capsys):
    first = train_in_process(tmp_path, *AUTO, "trainer.max_steps=14")
    before = _plan(tmp_path)
    resumed = train_in_process(tmp_path, *AUTO)
    after = _plan(tmp_path)
    assert resumed["resumed_from"] and resumed["steps"] > first["steps"]
    # The decisions up to the checkpoint are the resumed run's, unchanged.
    assert after.decisions[:len(before.decisions)] == before.decisions
    assert "samples with its plan" in capsys.readouterr().out


def test_one_micro_batch_per_step_and_a_micro_batch_cap_shape_every_step(tmp_path):
    # trainer.accumulate=1 on one worker: AdaScale splits every 4th step in halves, so every
    # batch is even and those steps are timed as two micro-batches; data.max_micro_batch=40
    # runs a batch of more than 40 as equal micro-batches of at most 40.
    run = (*AUTO[:4], "trainer.accumulate=1", *AUTO[5:], "data.max_micro_batch=40")
    metrics = train_in_process(tmp_path, *run)
    plan = _plan(tmp_path)
    assert plan.decisions[0].new == 90 and all(d.new % 2 == 0 for d in plan.decisions)
    last = sorted((tmp_path / "checkpoints").glob("step-*.pt"))[-1]
    times = torch.load(last, weights_only=True)["callbacks"]["adaptive_batch"]["times"]
    shapes = {(micro, k) for micro, k, workers, _ in times}
    assert (32, 1) in shapes and (16, 2) in shapes  # M0 whole, and its measured steps halved
    assert (30, 3) in shapes  # the profile's 90: three micro-batches of 30, none split
    assert all(micro <= 40 for micro, _ in shapes)
    assert metrics["adascale_final_gain"] > 1.0


def test_a_live_run_resumed_on_four_torchrun_workers_requantises_its_batch(tmp_path):
    # One worker to the profile's batch 90, then 4 workers x 2 micro-batches: 90 does not
    # split, so the run starts at the nearest batch that does (a recorded decision), keeps the
    # plan before it, and goes on deciding on its own step times on 4 workers.
    train_in_process(tmp_path, *AUTO, "trainer.max_steps=8")
    before = _plan(tmp_path)
    assert before.batch_at(10**9) == 90
    done = run("torchrun", 4, *AUTO, f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    after = _plan(tmp_path)
    assert after.decisions[:len(before.decisions)] == before.decisions
    moved = after.decisions[len(before.decisions)]
    assert (moved.old, moved.new, moved.reason) == (90, 88, "4 workers")
    assert all(d.new % 8 == 0 for d in after.decisions[len(before.decisions):])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 4 and metrics["resumed_from"]
    assert "resumed at" in done.stdout + done.stderr


# A hand-written plan: changes inside epochs (1,294 rows), one not a multiple of the last.
PLAN = BatchPlan(32, [Decision(samples=160, new=96), Decision(samples=928, new=64),
                      Decision(samples=1888, new=128)])
REPLAY = (*AUTO[:5], "trainer.epochs=2", "trainer.dtype=float64", "model.dropout=0.2",
          "logger.sample_predictions=0", "logger.tensorboard=false", "trainer.log_every=3")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("replay")
    PLAN.write(folder / "plan.json")
    whole = train_in_process(folder / "whole", *REPLAY, f"data.batch_plan={folder}/plan.json")
    return folder, whole


def test_a_replayed_plan_trains_at_its_batches_and_is_rewritten_as_given(replayed):
    folder, whole = replayed
    plan = _plan(folder / "whole")
    assert plan.state_dict() == PLAN.state_dict()
    assert whole["batch_changes"] == 3 and whole["final_global_batch_size"] == 128
    # Samples follow the plan: 5 steps of 32, 8 of 96, 15 of 64, then 128s.
    assert whole["steps"] > 5 + 8 + 15


def test_a_replayed_plan_resumed_mid_epoch_ends_bit_identical(replayed):
    folder, whole = replayed
    plan = f"data.batch_plan={folder}/plan.json"
    train_in_process(folder / "broken", *REPLAY, plan, "trainer.max_steps=9")  # inside epoch 0
    resumed = train_in_process(folder / "broken", *REPLAY, plan)
    assert resumed["resumed_from"] and resumed["steps"] == whole["steps"]
    a, b = weights(folder / "whole"), weights(folder / "broken")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["train_loss"] == whole["train_loss"]


def test_two_torchrun_workers_replaying_the_plan_reproduce_one_process(replayed, tmp_path):
    folder, whole = replayed
    run("torchrun", 2, *REPLAY, f"data.batch_plan={folder}/plan.json",
        "trainer.accumulate=1", f"hydra.run.dir={tmp_path}/w", cwd=tmp_path)
    two = json.loads((tmp_path / "w" / "metrics.json").read_text())
    assert two["world_size"] == 2 and two["steps"] == whole["steps"]
    assert two["adascale_progress_epochs"] == pytest.approx(whole["adascale_progress_epochs"],
                                                            rel=EXACT)
    assert max_difference(weights(folder / "whole"), weights(tmp_path / "w")) < EXACT


@pytest.mark.parametrize("plan, needle", [
    ('{"initial": 4096, "decisions": []}', "data.batch_plan: global batch 4096 is larger than "
                                           "the 1294 training samples; replay the plan on the "
                                           "data it was made for"),
    ('{"initial": 32}', r"plan.json is not a batch plan \('decisions'\); give the "
                        "batch_plan.json a run with data.batch_size=auto wrote"),
])
def test_a_plan_that_cannot_be_replayed_is_one_line(tmp_path, plan, needle):
    from trainer.errors import UserError

    (tmp_path / "plan.json").write_text(plan)
    with pytest.raises(UserError, match=needle):
        train_in_process(tmp_path / "run", *AUTO, f"data.batch_plan={tmp_path}/plan.json")
