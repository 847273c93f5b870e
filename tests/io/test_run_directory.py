"""One run per directory, checkpoints that belong to it, and a full disk.

A live run's directory is refused to a second run (a lock a SIGKILLed run does not leave
behind); starting fresh where another run left checkpoints moves them aside instead of mixing
two runs; pruning never deletes this run's newest checkpoint; a checkpoint that does not fit
on the disk is one line, leaves no partial file, and the run resumes once space is freed."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import pytest
import torch

from tests.helpers import run_cli, train_in_process, weights
from trainer.errors import UserError
from trainer.io.checkpoint import LOCK, Checkpointer
from trainer.io.checkpoint_read import read_checkpoint

SMALL = ("trainer.max_steps=12", "trainer.checkpoint_every=2", "trainer.keep_last=2",
         "logger.tensorboard=false", "logger.sample_predictions=0")


def _steps(folder) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("step-*.pt"))


def test_starting_over_moves_another_runs_checkpoints_aside(tmp_path):
    """The README's "start over" (trainer.resume=null) in a directory holding another run's
    checkpoints at HIGHER steps: this run's files survive pruning, last.pt is this run's, the
    old files are kept aside, and resume=auto then continues THIS run."""
    run_dir = tmp_path / "run"
    train_in_process(run_dir, *SMALL, "trainer.seed=1")
    folder = run_dir / "checkpoints"
    for step in (1000, 1010, 1020):  # an older, longer run's files
        shutil.copy(folder / "step-00000012.pt", folder / f"step-{step:08d}.pt")
    (folder / "step-00001020.pt").write_bytes(b"corrupt")
    train_in_process(run_dir, *SMALL[1:], "trainer.max_steps=6", "trainer.seed=2",
                     "trainer.resume=null")
    assert _steps(folder) == [4, 6]
    assert (folder / "last.pt").resolve().name == "step-00000006.pt"
    aside = [p for p in run_dir.iterdir() if p.name.startswith("checkpoints.replaced-")]
    assert len(aside) == 1 and _steps(aside[0]) == [10, 12, 1000, 1010, 1020]
    assert read_checkpoint(folder / "last.pt")["config"]["trainer"]["seed"] == 2
    metrics = train_in_process(run_dir, *SMALL[1:], "trainer.max_steps=8", "trainer.seed=2")
    assert metrics["resumed_from"].endswith("step-00000006.pt") and metrics["steps"] == 8


def test_resuming_an_older_step_sets_the_later_ones_aside(tmp_path):
    run_dir = tmp_path / "run"
    train_in_process(run_dir, *SMALL, "trainer.keep_last=10")
    folder = run_dir / "checkpoints"
    train_in_process(run_dir, *SMALL, "trainer.keep_last=10",
                     f"trainer.resume={folder}/step-00000006.pt")
    # The resumed lineage (2, 4, 6) and its new steps; 8..12 of the first attempt aside.
    assert _steps(folder) == [2, 4, 6, 8, 10, 12]
    aside = next(run_dir.glob("checkpoints.replaced-*"))
    assert _steps(aside) == [8, 10, 12]


def test_pruning_follows_the_order_this_run_wrote(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    checkpointer = Checkpointer(folder, keep_last=2, enabled=True)
    checkpointer.start(None)
    state = {"model": {"w": torch.ones(2)}}
    for step in (30, 10, 20):  # not in step order: what it wrote last is what it keeps
        checkpointer.write(state, step)
    assert _steps(folder) == [10, 20] and (folder / "last.pt").resolve().name.endswith("20.pt")
    assert not list(folder.glob(".*.tmp"))
    checkpointer.close()


def _hold_lock(run_dir) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(run_dir / LOCK)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'pid %d' % os.getpid())\n"
         "print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_live_runs_directory_is_refused_and_a_killed_one_is_not(tmp_path):
    run_dir = tmp_path / "run"
    holder = _hold_lock(run_dir)
    try:
        refused = run_cli(*SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines() == [
            f"trainer: error: the run directory {run_dir} is in use by a live run (pid "
            f"{holder.pid}); wait for it to end, or choose another hydra.run.dir"]
        assert not (run_dir / "checkpoints").exists() or not _steps(run_dir / "checkpoints")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel dropped the dead holder's lock: the next run takes the directory.
    done = run_cli(*SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with pytest.raises(UserError, match="is in use by a live run"):
        other = Checkpointer(run_dir / "checkpoints", 2, enabled=True)
        mine = Checkpointer(run_dir / "checkpoints", 2, enabled=True)
        mine.start("auto")
        try:
            other.start("auto")
        finally:
            mine.close()


def test_two_runs_started_together_never_share_a_directory(tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "trainer", *SMALL, "trainer.max_steps=200",
            "trainer.epochs=50", "logger.progress_bar=false", "dist.threads_per_worker=1",
            f"hydra.run.dir={run_dir}"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all("Traceback" not in err for _, err in results), results
    codes = sorted(code for code, _ in results)
    # Either the second was refused while the first ran, or it started after the first
    # ended and resumed it (nothing left to do); never both training in one directory.
    assert codes in ([0, 2], [0, 0]), results
    if codes == [0, 2]:
        assert "is in use by a live run" in next(err for code, err in results if code == 2)
    assert (run_dir / "checkpoints" / "last.pt").resolve().name == "step-00000200.pt"


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_loses_nothing(small_disk, tmp_path):
    """The MLP's checkpoint (weights + momentum) is ~2.4 MB: on a 3 MB disk the first fits
    (steps 2), the second does not."""
    run_dir = small_disk / "run"
    args = (*SMALL, "trainer.max_steps=6", f"hydra.run.dir={run_dir}")
    full = run_cli(*args, cwd=tmp_path)
    assert full.returncode == 2, full.stderr[-3000:]
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert lines[0].startswith(f"trainer: error: checkpoint {run_dir}/checkpoints/step-00000004.pt"
                               " did not fit (No space left on device): it needs ")
    assert "last.pt still points at step-00000002.pt, which is intact" in lines[0]
    assert "trainer.resume=auto" in lines[0]
    folder = run_dir / "checkpoints"
    assert _steps(folder) == [2] and not list(folder.glob(".*tmp"))
    assert read_checkpoint(folder / "last.pt")["progress"]["step"] == 2
    # Space freed (the tmpfs grown): resume=auto continues and ends like an unbroken run.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = run_cli(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = run_cli(*SMALL, "trainer.max_steps=6", f"hydra.run.dir={tmp_path}/whole",
                    cwd=tmp_path)
    assert whole.returncode == 0
    final, reference = weights(run_dir), weights(tmp_path / "whole")
    assert all(torch.equal(final[k], reference[k]) for k in final)


def test_a_stale_temporary_file_is_cleaned_at_start(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".step-00000004.pt.123-abcd.tmp").write_bytes(b"half a checkpoint")
    checkpointer = Checkpointer(folder, 2, enabled=True)
    checkpointer.start("auto")
    checkpointer.close()
    assert not list(folder.glob(".*.tmp"))
