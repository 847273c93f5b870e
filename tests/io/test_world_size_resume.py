"""A checkpoint written by N workers resumes on M workers at the same global batch, mid-epoch,
with the global batch's data order unchanged: in float64 the result equals the uninterrupted
one-worker run to 1e-9. Where a change of world size cannot be exact (plain BatchNorm) the run
says so in one line and continues."""

from __future__ import annotations

from tests.helpers import (
    EQUIVALENCE,
    EXACT,
    PACED,
    ROOT,
    STOPPABLE_STEPS,
    finish,
    launch,
    max_difference,
    run,
    run_cli,
    weights,
)


def test_preempted_on_two_workers_resumed_on_four_equals_one_worker(tmp_path):
    # Enough steps for the workers' stop agreement (about a second) to fall inside the run.
    args = (*EQUIVALENCE, f"trainer.max_steps={STOPPABLE_STEPS}", "trainer.epochs=100",
            "logger.tensorboard=false")
    run("none", 1, *args, f"hydra.run.dir={tmp_path}/one", cwd=ROOT)
    signal_at_11 = ("+callbacks.kill._target_=tests.helpers.signals.SignalAt",
                    "+callbacks.kill.step=11")
    proc = launch("torchrun", 2, *args, *PACED, *signal_at_11,
                  f"hydra.run.dir={tmp_path}/cut", cwd=ROOT)
    out, err = finish(proc, timeout=240)
    assert "stopped by SIGTERM at step" in out, err[-3000:]
    resumed = run("torchrun", 4, *args, f"hydra.run.dir={tmp_path}/cut", cwd=ROOT)
    assert '"world_size": 4' in (tmp_path / "cut" / "metrics.json").read_text()
    assert "BatchNorm" not in resumed.stdout + resumed.stderr  # the MLP has none: exact
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "cut")) < EXACT


def test_plain_batchnorm_says_a_new_world_size_is_not_exact(tmp_path):
    args = (*EQUIVALENCE, "model.norm=batch", "trainer.max_steps=6", "logger.tensorboard=false")
    run("torchrun", 2, *args, "trainer.checkpoint_every=3", "trainer.max_steps=3",
        f"hydra.run.dir={tmp_path}/r", cwd=ROOT)
    resumed = run_cli(*args, f"hydra.run.dir={tmp_path}/r", cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    notes = [line for line in resumed.stderr.splitlines() if "normalises each" in line]
    assert len(notes) == 1 and "checkpoint was written by 2 workers, this run has 1" in notes[0]
    assert "model.sync_bn=true" in notes[0]
