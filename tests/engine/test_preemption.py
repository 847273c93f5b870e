"""Preemption: SIGTERM, SIGUSR1 or SIGINT stops every rank after the same step, rank 0
checkpoints that step, the process says so in one line and exits 128 + the signal; resuming
finishes bit-exact with a run that was never interrupted.

One process stops after the very step the signal landed in. Several workers agree about once
a second, so there the stop step is wherever the next agreement falls: the tests read it from
the line and give the runs enough steps (LONG) for it to fall inside them, the signalled run
paced (tests/helpers/signals.py)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import torch

from tests.helpers import (
    BIN,
    EQUIVALENCE,
    EXACT,
    PACED,
    ROOT,
    SHRINK,
    STOPPABLE_STEPS,
    finish,
    launch,
    max_difference,
    run,
    run_cli,
    weights,
)
from trainer.engine.preemption import Preemption
from trainer.parallel.backends import Backend

RUN = (*EQUIVALENCE, "trainer.max_steps=40", "trainer.log_every=5", "logger.tensorboard=false")
# Several workers: about a second of steps may pass before they agree to stop.
LONG = (*EQUIVALENCE, f"trainer.max_steps={STOPPABLE_STEPS}", "trainer.epochs=100",
        "trainer.log_every=1", "logger.tensorboard=false")


def _signal_at(step: int, name: str = "SIGTERM", rank: int | None = None, times: int = 1):
    return ("+callbacks.kill._target_=tests.helpers.signals.SignalAt",
            f"+callbacks.kill.step={step}", f"+callbacks.kill.signal={name}",
            f"+callbacks.kill.rank={'null' if rank is None else rank}",
            f"+callbacks.kill.times={times}")


def _whole_run(tmp_path_factory, args: tuple[str, ...]) -> dict:
    root = tmp_path_factory.mktemp("whole")
    run("none", 1, *args, f"hydra.run.dir={root}/run", cwd=ROOT)  # (in this process)
    return weights(root / "run")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _whole_run(tmp_path_factory, RUN)


@pytest.fixture(scope="module")
def uninterrupted_long(tmp_path_factory):
    return _whole_run(tmp_path_factory, LONG)


def _stop_step(out: str, name: str = "SIGTERM") -> int:
    stops = [line for line in out.splitlines() if line.startswith(f"stopped by {name} at step")]
    assert len(stops) == 1, out[-3000:]  # rank 0 says it, once
    return int(stops[0].split()[5].rstrip(";"))


def _checkpoint_steps(run_dir) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*.pt"))


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1", "SIGINT"])
def test_a_signal_checkpoints_the_step_and_exits_128_plus_signal(tmp_path, name, uninterrupted):
    run_dir = tmp_path / "run"
    stopped = run_cli(*RUN, *_signal_at(13, name), f"hydra.run.dir={run_dir}", cwd=ROOT)
    signum = getattr(signal, name)
    assert stopped.returncode == 128 + signum, stopped.stderr[-2000:]
    line = (f"stopped by {name} at step 13; checkpoint {run_dir}/checkpoints/step-00000013.pt; "
            "resume with trainer.resume=auto")
    assert line in stopped.stdout.splitlines()
    assert "Traceback" not in stopped.stderr
    assert _checkpoint_steps(run_dir) == [13]  # mid-epoch (14 steps an epoch at batch 96)
    assert (run_dir / "checkpoints" / "last.pt").resolve().name == "step-00000013.pt"
    assert not (run_dir / "metrics.json").exists()  # the run has not finished
    if name != "SIGTERM":
        return  # the same stop; resuming it is checked once
    resumed = run_cli(*RUN, f"hydra.run.dir={run_dir}", cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resum" in resumed.stdout.lower()
    final = weights(run_dir)
    assert all(torch.equal(final[k], uninterrupted[k]) for k in final)


def test_a_stop_at_the_last_step_of_an_epoch_resumes_exactly(tmp_path, uninterrupted):
    """Stopped after step 14, the epoch's last (14 steps an epoch), before the epoch's end was
    handled: the resumed run has no batch left in that epoch (it used to get one empty batch,
    a NaN loss), evaluates, and goes on exactly."""
    run_dir = tmp_path / "run"
    stopped = run_cli(*RUN, *_signal_at(14), f"hydra.run.dir={run_dir}", cwd=ROOT)
    assert stopped.returncode == 143 and "stopped by SIGTERM at step 14;" in stopped.stdout
    resumed = run_cli(*RUN, f"hydra.run.dir={run_dir}", cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = weights(run_dir)
    assert all(torch.equal(final[k], uninterrupted[k]) for k in final)


def test_a_second_signal_while_stopping_changes_nothing(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    stopped = run_cli(*RUN, *_signal_at(21, times=3), f"hydra.run.dir={run_dir}", cwd=ROOT)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "SIGTERM received again" in stopped.stderr
    assert _checkpoint_steps(run_dir)[-1] == 21
    assert run_cli(*RUN, f"hydra.run.dir={run_dir}", cwd=ROOT).returncode == 0
    final = weights(run_dir)
    assert all(torch.equal(final[k], uninterrupted[k]) for k in final)


def test_two_workers_stop_together_when_one_is_signalled(tmp_path, uninterrupted_long):
    """Only rank 1 gets SIGTERM: both ranks stop after the same step (their next agreement),
    rank 0 checkpoints it, both exit 143; resumed on 2 workers the run equals the
    uninterrupted 1-worker run (float64, to 1e-9)."""
    run_dir = tmp_path / "run"
    proc = launch("torchrun", 2, *LONG, *PACED, *_signal_at(10, rank=1),
                  f"hydra.run.dir={run_dir}", cwd=ROOT)
    out, err = finish(proc, timeout=240)
    step = _stop_step(out)
    assert 10 <= step < STOPPABLE_STEPS, step
    assert "exitcode  : 143" in err and proc.returncode != 0  # torchrun names each worker's
    assert _checkpoint_steps(run_dir)[-1] == step
    run("torchrun", 2, *LONG, f"hydra.run.dir={run_dir}", cwd=ROOT)
    assert max_difference(weights(run_dir), uninterrupted_long) < EXACT


@pytest.mark.slow
def test_sigterm_to_the_torchrun_agent_ends_with_a_checkpoint(tmp_path, uninterrupted_long):
    """What a cluster does: SIGTERM to torchrun's agent, which forwards it to the workers;
    through trainer-launch the job then ends as one process would: exit 143, one line."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [str(BIN / "trainer-launch"), "torchrun", "2", *LONG, *PACED,
         f"hydra.run.dir={run_dir}", *SHRINK],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.monotonic() + 120
    while "step 20/" not in seen and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc, timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err[-3000:]
    assert "trainer-launch: torchrun stopped by SIGTERM: the workers checkpointed" in err
    step = _stop_step(seen + out)
    assert 20 <= step < STOPPABLE_STEPS, step
    assert _checkpoint_steps(run_dir)[-1] == step
    run("torchrun", 2, *LONG, f"hydra.run.dir={run_dir}", cwd=ROOT)
    assert max_difference(weights(run_dir), uninterrupted_long) < EXACT


def test_one_process_polls_its_own_flag_and_the_clock():
    backend = Backend(torch.device("cpu"))
    preemption = Preemption(backend, checkpoint_minutes=1 / 60)  # every second
    preemption.install()
    try:
        assert preemption.poll() == (0, False, False)
        time.sleep(1.1)
        assert preemption.poll() == (0, True, False)  # the clock: due
        preemption.saved()
        signal.raise_signal(signal.SIGUSR1)
        stop, _, _ = preemption.poll()
        assert stop == signal.SIGUSR1
    finally:
        preemption.uninstall()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_fit_raises_preempted_after_checkpointing_and_resumes(tmp_path, uninterrupted):
    """The Python API: ``trainer.fit`` in this very process (a notebook's interrupt is SIGINT)
    raises trainer.Preempted with the step and checkpoint; called again, it resumes."""
    import trainer
    from tests.helpers.signals import SignalAt

    with pytest.raises(trainer.Preempted) as stopped:
        trainer.fit([*SHRINK, *RUN], callbacks=[SignalAt(9, "SIGINT")], run_dir=tmp_path / "run")
    assert stopped.value.step == 9 and stopped.value.exit_code == 130
    assert stopped.value.checkpoint.name == "step-00000009.pt"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    metrics = trainer.fit([*SHRINK, *RUN], run_dir=tmp_path / "run")
    assert metrics["resumed_from"].endswith("step-00000009.pt") and metrics["steps"] == 40
    final = weights(tmp_path / "run")
    assert all(torch.equal(final[k], uninterrupted[k]) for k in final)


CHAINED = """
import os, signal, sys
from pathlib import Path

run_dir, record = Path(sys.argv[1]), Path(sys.argv[2])


def requeue(signum, frame):  # what submitit's handler does: requeue, then exit
    saved = (run_dir / "checkpoints" / "step-00000009.pt").exists()
    record.write_text(f"{signal.Signals(signum).name} checkpoint={saved}")
    sys.exit(0)


signal.signal(signal.SIGUSR2, requeue)
sys.argv = ["trainer", *sys.argv[3:], f"hydra.run.dir={run_dir}"]
from trainer.tools.train import main

main()
"""


def test_a_handler_the_process_had_runs_after_the_checkpoint(tmp_path):
    """Hydra's submitit launcher runs the job with submitit's SIGUSR2 handler installed, which
    requeues the job: the trainer checkpoints first, then hands the signal to it."""
    import os
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(CHAINED)
    record = tmp_path / "requeued"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), str(record),
                           *SHRINK, *RUN, *_signal_at(9, "SIGUSR2")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "stopped by SIGUSR2 at step 9;" in done.stdout, done.stderr[-2000:]
    assert record.read_text() == "SIGUSR2 checkpoint=True"
    assert done.returncode == 0  # the chained handler's own exit
