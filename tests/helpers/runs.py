"""Running the trainer the ways a user does: in-process, as the CLI, under launchers."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.config import SHRINK, compose_config
from trainer_recipes.mnist.synthetic import write_fake_mnist


def train_in_process(run_dir: Path, *overrides: str) -> dict:
    from trainer.tools.train import train

    return train(compose_config(*overrides), run_dir)


def cli_in_process(*args: str, cwd: Path,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``trainer ARGS`` as the CLI's ``main()`` runs it, in this process: for rows where what
    is tested is the one-line error and what was (not) written, not the process start (a
    process start costs seconds of the suite; this costs milliseconds). Returns what run_cli
    returns; the process's state (argv, cwd, environment, collector, threads, Hydra's global
    state) is put back as it was."""
    import contextlib
    import gc
    import io
    import traceback

    import torch
    from hydra.core.global_hydra import GlobalHydra

    from trainer.tools import train as cli

    argv, cwd_before, environ = sys.argv, os.getcwd(), dict(os.environ)
    collecting, threads = gc.isenabled(), torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        os.chdir(cwd)
        os.environ.pop("HYDRA_FULL_ERROR", None)
        os.environ.update(env or {})
        given = {a.partition("=")[0].lstrip("+~") for a in args}  # (a row may set SHRINK's)
        sys.argv = ["trainer", *args, *(a for a in SHRINK if a.partition("=")[0] not in given)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            except Exception:  # noqa: BLE001 (a traceback, as the process would print it)
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = argv
        os.chdir(cwd_before)
        os.environ.clear()
        os.environ.update(environ)
        gc.unfreeze()
        (gc.enable if collecting else gc.disable)()
        # The CLI pauses the collector for its start-up until training resumes it; a run
        # that failed before training leaves that pause recorded.
        from trainer.engine import collector

        collector._paused_for_startup = False
        torch.set_num_threads(threads)
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(["trainer", *args], code, out.getvalue(),
                                       err.getvalue())


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300):
    """Run ``python -m trainer ARGS`` and return the CompletedProcess (text mode)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args, *SHRINK],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


make_fake_mnist = write_fake_mnist

BIN = Path(sys.executable).parent
HAVE_MPI = importlib.util.find_spec("mpi4py") is not None and (BIN / "mpiexec").exists()
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="pip install -e '.[mpi,mpich]' for mpiexec")


def launch(launcher: str, n: int, *args: str, cwd: Path, timeout: float = 240, **popen):
    """Start ``trainer ARGS`` on n workers; returns the Popen (output captured as text)."""
    trainer = [sys.executable, "-m", "trainer", *args, *SHRINK]
    if launcher == "torchrun":
        command = [str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={n}",
                   "-m", "trainer", *args, *SHRINK]
    elif launcher == "mpiexec":
        command = [str(BIN / "mpiexec"), "-n", str(n), *trainer]
    else:
        command = trainer
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def run(launcher: str, n: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``trainer ARGS`` on n workers under ``launcher``, which must succeed. The one-worker
    reference runs (``"none"``) run the CLI in this process: what they are compared with is
    the launched workers, not a process start."""
    if launcher == "none":
        result = cli_in_process(*args, cwd=cwd)
        assert result.returncode == 0, result.stderr[-3000:]
        return result
    proc = launch(launcher, n, *args, cwd=cwd)
    out, err = finish(proc, timeout=240)
    assert proc.returncode == 0, err[-3000:]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """``proc.communicate(timeout=...)`` that, past the timeout, fails the test with where
    every process under ``proc`` was: each gets SIGABRT, on which Python's faulthandler
    (PYTHONFAULTHANDLER, set for the suite in tests/conftest.py) prints all its threads'
    stacks to the stderr the test reads. A hang of a launcher, a rank or a DataLoader worker
    then says where it hung instead of only that it timed out."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    # The deepest first (DataLoader workers, ranks), the launcher last: each prints its own.
    for pid in [*reversed(descendants(proc.pid)), proc.pid]:
        try:
            os.kill(pid, signal.SIGABRT)
        except ProcessLookupError:
            pass
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    command = " ".join(map(str, proc.args))
    pytest.fail(f"{command}\nran past {timeout:g} s; its output's end:\n{out[-2000:]}\n"
                f"its processes' stacks (SIGABRT):\n{err[-15000:]}", pytrace=False)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
