"""Checkpoint files: atomic writes, last.pt, pruning, corrupt-file fallback, safe loading."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from trainer.checkpoint import Checkpointer, read_checkpoint, resolve_resume
from trainer.errors import UserError


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
        ckpt.save(_state(step), step)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step-00000010.pt", "step-00000015.pt"]  # no temp files left
    assert os.readlink(tmp_path / "checkpoints" / "last.pt") == "step-00000015.pt"
    loaded = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert torch.equal(loaded["model"]["w"], torch.full((4, 4), 15.0))


def test_non_primary_ranks_write_nothing(tmp_path):
    ckpt = Checkpointer(tmp_path / "checkpoints", keep_last=2, enabled=False)
    assert ckpt.save(_state(), 1) is None
    assert not (tmp_path / "checkpoints").exists()


def test_non_finite_weights_are_never_saved(tmp_path):
    ckpt = Checkpointer(tmp_path / "c", keep_last=2, enabled=True)
    ckpt.save(_state(1.0), 1)
    with pytest.raises(UserError, match="step 2: non-finite weights in w"):
        ckpt.save(_state(float("nan")), 2)
    assert os.readlink(tmp_path / "c" / "last.pt") == "step-00000001.pt"


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_corrupt_newest_falls_back_to_previous_with_a_warning(tmp_path, caplog, damage):
    ckpt = Checkpointer(tmp_path / "checkpoints", keep_last=3, enabled=True)
    good = ckpt.save(_state(1.0), 1)
    newest = ckpt.save(_state(2.0), 2)
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
    path = Checkpointer(tmp_path, keep_last=1, enabled=True).save(_state(3.0), 1)
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
    with pytest.raises(UserError, match="cannot be loaded"):
        resolve_resume(str(path), tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_auto_without_checkpoints_starts_fresh(tmp_path):
    assert resolve_resume("auto", tmp_path) is None
    assert resolve_resume(None, tmp_path) is None


def test_unwritable_checkpoint_dir_is_one_clear_error(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    with pytest.raises(UserError, match="cannot write checkpoints to"):
        Checkpointer(tmp_path / "checkpoints", keep_last=1, enabled=True).check_writable()
