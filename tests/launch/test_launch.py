"""The launch/ scripts and the SLURM environment, run for real on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import (
    EQUIVALENCE,
    EXACT,
    HAVE_MPI,
    PACED,
    ROOT,
    SHRINK,
    descendants,
    finish,
    max_difference,
    run,
    weights,
)

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}


def script(name: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", str(ROOT / "launch" / name), *args, *SHRINK], cwd=cwd, env=env or ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_torchrun_script_restarts_failed_workers_which_resume_exactly(tmp_path):
    # 80 steps, paced (50 a second at most: tests/helpers/signals.py) so the kill lands near
    # step 36, well before the end.
    args = ("data.batch_size=32", "trainer.epochs=2", "trainer.checkpoint_every=9",
            "logger.sample_predictions=0")
    run("torchrun", 2, *args, f"hydra.run.dir={tmp_path}/ref", cwd=tmp_path)
    args = (*args, *PACED)  # (Pace changes nothing the run computes)
    env = {**ENV, "MAX_RESTARTS": "1", "TRAINER_RUN_DIR": str(tmp_path / "elastic"),
           "PYTHONPATH": str(ROOT)}
    proc = script("torchrun.sh", "2", *args, cwd=tmp_path, env=env)
    folder = tmp_path / "elastic" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (folder.exists() and any(folder.glob("step-0000003*.pt"))):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.005)
    workers = [
        pid for pid in descendants(proc.pid)
        if b"-m\x00trainer\x00" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)  # one worker dies; torchrun restarts both
    out, err = finish(proc, timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert "resuming from" in out
    assert max_difference(weights(tmp_path / "ref"), weights(tmp_path / "elastic")) == 0.0


@pytest.mark.skipif(not HAVE_MPI, reason="pip install -e '.[mpi,mpich]' for mpiexec")
def test_mpirun_script_with_pips_mpich(tmp_path):
    proc = script("mpirun.sh", "2", *EQUIVALENCE, f"hydra.run.dir={tmp_path}/r", cwd=tmp_path,
                  env={**ENV, "MPIRUN": str(BIN / "mpiexec")})
    _, err = finish(proc, timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert '"world_size": 2' in (tmp_path / "r" / "metrics.json").read_text()


def test_srun_environment_matches_one_worker(tmp_path):
    """Two processes with the variables srun sets (no SLURM here): the SLURM rendezvous."""
    run("none", 1, *EQUIVALENCE, f"hydra.run.dir={tmp_path}/one", cwd=tmp_path)
    base = {k: v for k, v in ENV.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
    base.update(SLURM_NTASKS="2", SLURM_JOB_NODELIST="localhost",
                SLURM_JOB_ID=str(40000 + os.getpid() % 9000))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "trainer", *EQUIVALENCE, f"hydra.run.dir={tmp_path}/two",
             *SHRINK],
            cwd=tmp_path, env={**base, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for r in (0, 1)
    ]
    for proc in procs:
        _, err = finish(proc, timeout=240)
        assert proc.returncode == 0, err[-3000:]
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "two")) < EXACT


def test_slurm_script_is_valid_bash_and_passes_overrides():
    text = (ROOT / "launch" / "slurm.sbatch").read_text()
    assert "#SBATCH --nodes=" in text and "srun" in text and '"$@"' in text
    assert subprocess.run(["bash", "-n", str(ROOT / "launch" / "slurm.sbatch")]).returncode == 0


def test_first_slurm_host_parsing():
    from trainer.parallel.backends.rendezvous import first_slurm_host

    assert first_slurm_host("gpu[03-05,07],cpu1") == "gpu03"
    assert first_slurm_host("node7") == "node7"
    assert first_slurm_host("a-b[10-11]") == "a-b10"



def test_slurm_script_generates_one_srun_of_the_trainer_per_allocation(tmp_path):
    """sbatch runs the script once; it must hand srun the trainer with the job's run directory
    and the CPUs per task (a stand-in srun prints what it was given)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text('#!/usr/bin/env bash\necho "srun $*"\n')
    (fake / "srun").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLURM_CPUS_PER_TASK": "8", "SLURM_SUBMIT_DIR": str(ROOT), "PYTHON": "python3"}
    out = subprocess.run(["bash", str(ROOT / "launch" / "slurm.sbatch"), "recipe=mnist",
                          "data.batch_size=4096"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == ("srun --kill-on-bad-exit=1 python3 -m trainer dist.threads_per_worker=8 "
                   "hydra.run.dir=outputs/slurm/4242 recipe=mnist data.batch_size=4096")


@pytest.mark.parametrize("code,requeued", [(138, True), (143, False), (0, False), (2, False)])
def test_slurm_script_requeues_after_the_time_limit_checkpoint(tmp_path, code, requeued):
    """SLURM's SIGUSR1 before the time limit makes the trainer checkpoint and exit 138; the
    script then requeues the job (stand-in srun and scontrol record what they were asked)."""
    text = (ROOT / "launch" / "slurm.sbatch").read_text()
    assert "#SBATCH --signal=USR1@120" in text and "#SBATCH --requeue" in text
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text(f"#!/usr/bin/env bash\nexit {code}\n")
    (fake / "scontrol").write_text(f'#!/usr/bin/env bash\necho "$*" >> {tmp_path}/scontrol\n')
    for tool in ("srun", "scontrol"):
        (fake / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLURM_SUBMIT_DIR": str(ROOT), "PYTHON": "python3"}
    done = subprocess.run(["bash", str(ROOT / "launch" / "slurm.sbatch")], env=env,
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == code
    asked = (tmp_path / "scontrol").read_text() if (tmp_path / "scontrol").exists() else ""
    assert asked == ("requeue 4242\n" if requeued else "")


def test_hydra_submitit_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="pip install -e '.[slurm]'")
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "hydra/launcher=trainer_slurm", "recipe=mnist",
         "hydra.launcher.nodes=2", "--cfg", "hydra"], capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    launcher = result.stdout.split("  launcher:\n", 1)[1]
    assert ("_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
            in launcher)
    assert "    nodes: 2\n" in launcher and "    tasks_per_node: 4\n" in launcher
    assert "    gpus_per_node: 4\n" in launcher


@pytest.mark.parametrize("argv,line", [
    (["torchrun", "two"], "torchrun's first argument is the number of processes per node, a "
                          "positive integer (or auto), not 'two': trainer-launch torchrun 2"),
    (["torchrun"], "torchrun's first argument is the number of processes per node, a positive "
                   "integer (or auto), and it is missing"),
    (["mpirun", "-3"], "mpirun's first argument is the number of processes, a positive "
                       "integer, not '-3'"),
    (["horovodrun", "0"], "horovodrun's first argument is the number of processes"),
    (["nope", "2"], "unknown launcher 'nope'; choose one of: torchrun, mpirun"),
])
def test_trainer_launch_checks_its_arguments_in_one_line(capsys, argv, line):
    """Before the launcher runs (torchrun's own answer is `ValueError: Unsupported
    nproc_per_node value: two` under a traceback)."""
    from trainer.launch import command

    with pytest.raises(SystemExit) as ended:
        command(argv)
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trainer-launch: error: {line}") and err.count("\n") == 1
