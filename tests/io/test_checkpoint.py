"""Checkpoint files: atomic writes, last.pt, pruning, corrupt-file fallback, safe loading."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from trainer.errors import UserError
from trainer.io.checkpoint import Checkpointer, resolve_resume
from trainer.io.checkpoint_read import read_checkpoint


def _state(value: float = 1.0) -> dict:
    return {
        "model": {"w": torch.full((4, 4), value)},
        "optimizer": {},
        "schedule": {},
        "progress": {"step": 0},
        "rng": {},
        "config": {},
    }


def test_save_links_last_and_keeps_only_the_newest(tmp_path):
    ckpt = Checkpointer(tmp_path / "checkpoints", keep_last=2, enabled=True)
    for step in (5, 10, 15):
        ckpt.write(_state(step), step)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step-00000010.pt", "step-00000015.pt"]  # no temp files left
    assert os.readlink(tmp_path / "checkpoints" / "last.pt") == "step-00000015.pt"
    loaded = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert torch.equal(loaded["model"]["w"], torch.full((4, 4), 15.0))


def test_non_primary_ranks_write_nothing(tmp_path):
    ckpt = Checkpointer(tmp_path / "checkpoints", keep_last=2, enabled=False)
    assert ckpt.write(_state(), 1) is None
    assert not (tmp_path / "checkpoints").exists()


def test_non_finite_weights_are_never_saved(tmp_path):
    ckpt = Checkpointer(tmp_path / "c", keep_last=2, enabled=True)
    ckpt.write(_state(1.0), 1)
    with pytest.raises(UserError, match="step 2: non-finite weights in w"):
        ckpt.write(_state(float("nan")), 2)
    assert os.readlink(tmp_path / "c" / "last.pt") == "step-00000001.pt"


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_corrupt_newest_falls_back_to_previous_with_a_warning(tmp_path, caplog, damage):
    ckpt = Checkpointer(tmp_path / "checkpoints", keep_last=3, enabled=True)
    good = ckpt.write(_state(1.0), 1)
    newest = ckpt.write(_state(2.0), 2)
    data = bytearray(newest.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":  # inside the tensor payload: only the CRC check can see it
        data[data.index(torch.full((4, 4), 2.0).numpy().tobytes()) + 3] ^= 0xFF
    else:
        data = bytearray()
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        path, state = resolve_resume("auto", tmp_path)
    assert path == good and torch.equal(state["model"]["w"], torch.ones(4, 4))
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert str(newest) in warning and str(good) in warning


def test_flipped_payload_byte_is_detected(tmp_path):
    path = Checkpointer(tmp_path, keep_last=1, enabled=True).write(_state(3.0), 1)
    data = bytearray(path.read_bytes())
    offset = data.index(torch.full((4, 4), 3.0).numpy().tobytes())
    data[offset + 5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(Exception, match="checksum mismatch"):
        read_checkpoint(path)


def test_explicit_unreadable_checkpoint_is_one_clear_error(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as info:
        resolve_resume(str(bad), tmp_path)
    assert str(bad) in str(info.value) and "trainer.resume=null" in str(info.value)


def test_checkpoints_cannot_run_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({**_state(), "extra": Payload()}, path)
    with pytest.raises(UserError, match="safe loading refuses.*not loaded"):
        resolve_resume(str(path), tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_auto_without_checkpoints_starts_fresh(tmp_path):
    assert resolve_resume("auto", tmp_path) is None
    assert resolve_resume(None, tmp_path) is None


def test_unwritable_checkpoint_dir_is_one_clear_error(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    with pytest.raises(UserError, match="cannot write checkpoints to"):
        Checkpointer(tmp_path / "checkpoints", keep_last=1, enabled=True).check_writable()


def test_every_component_is_registered_once_and_saved_under_its_name(tmp_path):
    from tests.helpers import compose_config
    from trainer.engine.build import build_run
    from trainer.parallel.backends.base import Backend

    run = build_run(compose_config("trainer.noise_scale=always"), tmp_path,
                    Backend(torch.device("cpu")))
    assert list(run.checkpointer.components) == [
        "progress", "model", "optimizer", "schedule", "precision", "noise_scale", "data",
        "callbacks", "rng"]
    with pytest.raises(ValueError, match="already registered"):
        run.checkpointer.register("model", run.model)
    path = run.checkpointer.save(0)  # the run's metadata beside the components, set once
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"format", *run.checkpointer.components, "config", "model_kwargs"}
    assert saved["config"]["trainer"]["noise_scale"] == "always"


def test_a_checkpoint_from_before_callbacks_existed_resumes_exactly(tmp_path):
    """Checkpoints written before a component existed (no "callbacks" entry, an empty
    "noise_scale") or before the position was kept as a sample offset (a progress without
    "offset", mid-epoch: step 5 of 20) resume: that component keeps its fresh state, the rest
    continue exactly."""
    from tests.helpers import train_in_process

    common = ("trainer.max_steps=10", "trainer.checkpoint_every=5", "trainer.keep_last=5",
              "logger.tensorboard=false", "model.dropout=0.2")
    train_in_process(tmp_path / "a", *common)
    old = torch.load(tmp_path / "a" / "checkpoints" / "step-00000005.pt", weights_only=True)
    del old["callbacks"]
    old["noise_scale"] = {}
    assert old["progress"].pop("offset") == 5 * 64 and old["progress"]["batch"] == 5
    torch.save(old, tmp_path / "old.pt")
    train_in_process(tmp_path / "b", *common, f"trainer.resume={tmp_path / 'old.pt'}")
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_holding_early_stopping_in_its_progress_still_resumes_the_count(
        tmp_path, caplog):
    """Checkpoints written when early stopping's and the best checkpoint's state lived in the
    run's progress (best, bad_evals, best_checkpoint_step/_value), and their options in the
    loop's config (trainer.early_stop, early_stop_metric, ...): a resume hands that state to
    the callbacks and reads the stored config in today's keys; trainer-predict opens the
    checkpoint. Such a run had no validation split: it goes on training on every row, and
    its best values (the test split's) are said and set aside, not compared with the
    training loss it now selects on."""
    from tests.helpers import train_in_process
    from tests.helpers.images import write_digit_photo
    from trainer.engine.inference import load_trusted
    from trainer.tools.predict import predict

    # Patience 2 with eval_every=1 over a plateaued learning rate: early stopping ends it.
    common = ("trainer.max_steps=60", "trainer.eval_every=2", "trainer.checkpoint_every=2",
              "trainer.keep_last=50", "callbacks=[default,early_stopping]",
              "callbacks.early_stopping.patience=2", "optimizer.lr=0.0005",
              "logger.tensorboard=false", "data.val_fraction=0")
    whole = train_in_process(tmp_path / "a", *common)
    assert whole["stopped_early"] and whole["steps"] > 4
    saved = torch.load(tmp_path / "a" / "checkpoints" / "step-00000004.pt", weights_only=True)
    stopping = saved["callbacks"].pop("early_stopping")
    best = saved["callbacks"].pop("best_checkpoint")
    saved["progress"].update(best=stopping["best"], bad_evals=stopping["bad_evals"],
                             best_checkpoint_step=best["step"],
                             best_checkpoint_value=best["value"])
    saved["config"]["callbacks"] = {}
    del saved["config"]["data"]["val_fraction"]
    saved["config"]["trainer"].update(
        early_stop=2, early_stop_metric="eval/accuracy", early_stop_mode="max",
        early_stop_min_delta=0.0, profile=False, profile_wait=5, profile_warmup=2,
        profile_active=5, profile_all_ranks=False)
    torch.save(saved, tmp_path / "old.pt")
    resumed = train_in_process(tmp_path / "b", *common[:-1],
                               f"trainer.resume={tmp_path / 'old.pt'}")
    assert resumed["resumed_from"] and resumed["best_metric"] == "train/epoch_loss"
    said = [r.getMessage() for r in caplog.records]
    assert f"early stopping starts over on train/epoch_loss: the checkpoint's best " \
           f"({stopping['best']:.4g}) was measured on the test split" in said
    assert any(m.startswith(f"best.pt starts over on train/epoch_loss: the checkpoint's best "
                            f"(step {best['step']}") for m in said)
    # Its share of validation rows is the checkpoint's (none), whatever the config says.
    assert "data.val_fraction=0.1 is not used: a resumed run keeps the validation split it " \
           "started with (0)" in said
    assert not [m for m in said if "config differs" in m]
    config = load_trusted(tmp_path / "old.pt")[1]["config"]
    assert config["callbacks"]["early_stopping"]["patience"] == 2
    assert "early_stop" not in config["trainer"]
    photo = write_digit_photo(torch.eye(8) * 16, 16, tmp_path / "digit.png")
    [(_, label, probability)] = predict(tmp_path / "old.pt", [photo])
    assert label in [str(d) for d in range(10)] and 0 < probability <= 1


def test_a_run_whose_checkpoints_are_all_unreadable_stops_instead_of_starting_over(tmp_path):
    """trainer.resume=auto (the default) over a folder where no checkpoint loads: one line
    naming them and the choices, nothing loaded or moved; trainer.resume=null starts over on
    purpose and keeps the old files aside."""
    import trainer
    from tests.helpers import SHRINK

    run = [*SHRINK, "trainer.max_steps=10", "trainer.checkpoint_every=5",
           "logger.tensorboard=false", "logger.sample_predictions=0"]
    trainer.fit(run, run_dir=tmp_path)
    files = sorted((tmp_path / "checkpoints").glob("step-*.pt"))
    assert [p.name for p in files] == ["step-00000005.pt", "step-00000010.pt"]
    for path in files:
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as stopped:
        trainer.fit(run, run_dir=tmp_path)
    line = str(stopped.value)
    assert line.startswith(f"trainer.resume=auto: none of the 2 checkpoint(s) in "
                           f"{tmp_path / 'checkpoints'} can be read: step-00000010.pt is "
                           "truncated or not a torch file"), line
    assert line.endswith("or start over on purpose with trainer.resume=null (they are then "
                         "moved aside, not deleted)") and "\n" not in line
    assert [p.read_bytes() for p in files] == [b"not a checkpoint"] * 2  # untouched
    metrics = trainer.fit([*run, "trainer.resume=null"], run_dir=tmp_path)
    assert metrics["steps"] == 10 and metrics["resumed_from"] is None
    assert len(list(tmp_path.glob("checkpoints.*/step-*.pt"))) == 2  # kept aside
