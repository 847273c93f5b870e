"""The ``trainer`` command: compose the config, build the run, train, close.

``trainer`` and ``python -m trainer`` both land in :func:`main`. A :class:`UserError` anywhere
becomes one line on stderr and exit code 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from trainer.compat import hydra_group_options
from trainer.config import PRIMARY_CONFIG, SWEEP_FUNCTIONS, register_configs
from trainer.engine.collector import freeze_for_exit, pause_for_startup
from trainer.errors import Preempted, UserError, WorkerLost
from trainer.parallel import identity
from trainer.tools.hydra_errors import one_line
from trainer.tools.user_traceback import report

EXIT_USER_ERROR = 2


def fail(message: str) -> None:
    """The one line for bad input, and exit 2. Every rank of a job fails alike on it, so each
    node's first rank says it: once, on its own line (one write, so that nothing else's output
    lands inside it), not once per rank run together. (What differs by rank, workers that lost
    each other, is a WorkerLost: every rank says its own.)"""
    if identity.from_environment().speaks_for_node:
        sys.stderr.write(f"trainer: error: {message}\n")
        sys.stderr.flush()
    sys.exit(EXIT_USER_ERROR)


def train(cfg: DictConfig, run_dir: Path, objects: dict | None = None) -> dict:
    """Check the config, start the backend, build everything, fit; the final metrics.

    ``objects``: what ``trainer.fit``'s caller built (model, data, callbacks)."""
    from trainer.config import batch_size
    from trainer.config.validate import validate
    from trainer.engine.build import pick_device, shared_run_dir
    from trainer.parallel.backends import build_backend

    objects = objects or {}
    batch_size.settle(cfg)  # data.batch_size=auto: its M0 in the keys that mean it
    # Before any process group exists: every rank fails alike, nothing hangs.
    validate(cfg, given=tuple(k for k in ("model", "data", "task") if k in objects))
    backend = build_backend(cfg.dist, pick_device(cfg.trainer.device), cfg.trainer.accumulate)
    try:
        attempt = functools.partial(_attempt, cfg, backend, objects)
        if cfg.dist.elastic:
            from trainer.parallel.backends.horovod_elastic import run_elastic

            return run_elastic(backend, run_dir, cfg.trainer.log_every, attempt)
        return attempt(shared_run_dir(backend, run_dir))
    except (UserError, Preempted):
        raise
    except Exception as exc:
        if (line := backend.user_error(exc)) is not None:
            raise UserError(line) from None
        reason = backend.explain_failure(exc)
        if reason is None:
            raise  # a bug: keep the traceback
        raise WorkerLost(reason) from None
    finally:
        backend.close()


def _attempt(cfg: DictConfig, backend, objects: dict, run_dir: Path,
             continuing: tuple[str, dict] | None = None, callbacks=()) -> dict:
    """Build the run in ``run_dir`` and train it to the end. Horovod elastic builds it again
    after workers come or go: ``continuing``, its state held in memory (see
    trainer.engine.build.build_run); ``callbacks``, its commits, after the caller's."""
    from trainer.engine.build import build_run
    from trainer.engine.loop import fit

    if callbacks:
        objects = {**objects, "callbacks": [*objects.get("callbacks", ()), *callbacks]}
    run = build_run(cfg, run_dir, backend, objects, continuing)
    stopped = None
    try:
        metrics = fit(run)
        if cfg.quant.mode != "none" and cfg.quant.export:
            from trainer.quant.export import export_run

            metrics["quant"] = backend.on_primary(functools.partial(export_run, run))
    except Preempted as exc:
        stopped = exc  # its checkpoint is written: tear down as a finished run does
    finally:
        run.logger.close()
        run.checkpointer.close()
        if callable(close := getattr(run.data, "close", None)):  # (a user's own data class)
            close()
    # Free the model while the interpreter is fully alive: DDP holds the process group,
    # and a Gloo group torn down only at interpreter exit can abort the process
    # ("terminate called without an active exception"), failing a finished run.
    del run
    gc.collect()
    backend.barrier()  # every rank done (rank 0 has written its files) before teardown
    if stopped is not None:
        raise stopped
    return metrics


@hydra.main(version_base="1.3", config_path=PRIMARY_CONFIG, config_name="train")
def _hydra_entry(cfg: DictConfig) -> float:
    # Rank 0 speaks for the job; the other ranks report only warnings and errors.
    level = logging.INFO if identity.from_environment().is_primary else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _SWEEP.jobs += 1
    try:
        metrics = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    except WorkerLost as exc:
        print(f"trainer: error: {exc}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(EXIT_USER_ERROR)  # skip interpreter teardown of the broken process group
    except UserError as exc:
        if _in_sweep():
            return _SWEEP.failed(str(exc))
        fail(str(exc))
    except OmegaConfBaseException as exc:  # a key read while running: interpolations...
        if _SHOW_HYDRA_ERRORS:
            raise
        if _in_sweep():
            return _SWEEP.failed(one_line(exc))
        fail(one_line(exc))
    except Preempted as exc:
        # The primary rank printed the line; the checkpoint is on disk.
        sys.stdout.flush()
        _chain_signal(exc.signum)
        sys.exit(exc.exit_code)  # as the signal would have ended it (143 for SIGTERM)
    except Exception as exc:  # the user's own code raised (or a bug of ours: no user frame)
        if _SHOW_HYDRA_ERRORS or os.environ.get("TRAINER_FULL_ERROR") or not report(exc):
            raise
        if _in_sweep():
            return _SWEEP.failed(f"your code raised {type(exc).__name__}: {exc}", said=True)
        sys.stdout.flush()
        sys.exit(1)
    # Hydra sweepers (Optuna, Ax) maximise or minimise what the task function returns:
    # the accuracy, or the loss for a task without one (regression).
    accuracy = metrics["test_accuracy"]
    return accuracy if accuracy is not None else metrics["test_loss"]


def _in_sweep() -> bool:
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


class _Sweep:
    """A sweep's jobs, counted as they run in this process (Hydra's basic launcher runs them
    one after the other): a job's bad input ends that job, not the sweep, so that the jobs
    after it still run; the sweep then ends in exit 2 naming the failed ones."""

    def __init__(self) -> None:
        self.jobs = 0
        self.failures: list[str] = []

    def failed(self, message: str, said: bool = False) -> float:
        """Say why this job failed (and write it into its folder as ``failed.txt``, for
        trainer-report); NaN to the sweeper (Optuna and Ax record a failed trial)."""
        folder = Path(HydraConfig.get().runtime.output_dir)  # named by the swept values
        job = f"job {folder.name}"
        self.failures.append(job)
        where = identity.from_environment()
        if where.speaks_for_node and not said:
            sys.stderr.write(f"trainer: error: {job}: {message}\n")
            sys.stderr.flush()
        if where.is_primary:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "failed.txt").write_text(message + "\n")
        return float("nan")

    def end(self) -> None:
        if self.failures:
            fail(f"{len(self.failures)} of the sweep's {self.jobs} jobs failed "
                 f"({', '.join(self.failures)}; each one's reason is above and in its folder's "
                 "failed.txt); the others ran to the end")


_SWEEP = _Sweep()


def _chain_signal(signum: int) -> None:
    """Hand the signal, now that the checkpoint is written, to the handler the process had
    before the run (restored by then): submitit's requeues the job on SIGUSR2. The default
    actions (SIG_DFL, Ctrl-C's KeyboardInterrupt) are replaced by our exit code instead."""
    import signal

    handler = signal.getsignal(signum)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signum, None)


def _check_output_dirs(argv: list[str]) -> None:
    """Refuse an unwritable hydra.run.dir / hydra.sweep.dir before Hydra tries to create it."""
    given = [a for a in argv if a.partition("=")[0].lstrip("+~") in ("hydra.run.dir",
                                                                     "hydra.sweep.dir")]
    # Without either, Hydra writes under outputs/ or multirun/ in the working directory.
    for arg in given or [f"hydra.run.dir={Path.cwd()}"]:
        key, _, value = arg.partition("=")
        if not value:
            continue
        path = Path(value).expanduser().absolute()
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            fail(f"{key}={value} is not usable: {existing} is a file, not a directory; "
                 "choose another directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            fail(f"{key}={value} is not writable (no write permission on {existing}); "
                 "choose a directory you can write to")
        if "${" not in value:
            try:  # root passes the access check everywhere; /proc still refuses a folder
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                fail(f"{key}={value} is not usable ({exc.strerror}); choose a directory you "
                     "can write to")


def _import_config_dir_project(argv: list[str]) -> None:
    """``--config-dir DIR`` inside a project that is not installed (``shapes/conf`` in the
    project folder): its ``_target_``s name the project's modules, so the folder that holds
    the project's top package goes on the import path, as ``python -m trainer`` run from there
    would put it (the console script puts nothing there)."""
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            given = argv[i + 1]
        elif arg.startswith("--config-dir="):
            given = arg.partition("=")[2]
        else:
            continue
        folder = Path(given).expanduser().absolute()
        while (folder / "__init__.py").is_file() and folder != folder.parent:
            folder = folder.parent  # up through the packages to the folder holding the top one
        if folder.is_dir() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


def _group_options(argv: list[str]):
    """``(overrides, options)``: the command line's overrides, and ``options(group)``: the
    group's options as Hydra's own config repository sees them for this command line (the
    framework's configs, installed packages' through the entry point, ``--config-dir``,
    ``hydra.searchpath``). None where the command line is not one Hydra would compose."""
    parsed = hydra_group_options(argv, PRIMARY_CONFIG, "train")
    if parsed is None:
        return None  # Hydra's own parser reports the bad flag
    args, options = parsed
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return None
    if args.config_dir is not None and not os.path.isdir(args.config_dir):
        fail(f"--config-dir {args.config_dir}: no such directory")
    return list(args.overrides), options


def _searchpath_packages(argv: list[str]) -> list[str]:
    """The packages ``hydra.searchpath=[pkg://...]`` names on the command line."""
    import re

    return [m for a in argv if a.lstrip("+").startswith("hydra.searchpath=")
            for m in re.findall(r"pkg://([\w.]+)", a)]


def _check_search_path(argv: list[str]) -> None:
    """A ``pkg://`` config package that cannot be imported is one line; one that can is
    used, so Hydra's warning that it "is not available" (given for a folder without
    ``__init__.py``, which Python imports all the same) is false and not shown."""
    import importlib.util
    import re
    import warnings

    for module in _searchpath_packages(argv):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            fail(f"hydra.searchpath: pkg://{module} is not an importable package; install the "
                 "package that holds it, or put its folder on PYTHONPATH (--config-dir DIR "
                 "takes a folder instead)")
        warnings.filterwarnings(
            "ignore", message=rf"provider=.*, path={re.escape(module)} is not available")


def _unshipped_configs(argv: list[str]) -> str:
    """The likely cause when a config package named on the command line (or offered by an
    installed package) holds no YAML: it was built without its package data."""
    import importlib.util

    from trainer.config import offered_config_modules

    empty = []
    for module in dict.fromkeys([*_searchpath_packages(argv), *offered_config_modules()]):
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            continue
        folders = list(spec.submodule_search_locations or []) if spec else []
        if folders and not any(any(Path(f).rglob("*.yaml")) for f in folders):
            empty.append(module)
    if not empty:
        return ""
    return (f"; {', '.join(empty)} holds no YAML files: was its package built without them? "
            "(pyproject.toml: [tool.setuptools.package-data] \"*\" = [\"**/*.yaml\"])")


def _check_group_choices(argv: list[str]) -> None:
    """One line for an unknown option (``recipe=nope``) instead of Hydra's search-path dump."""
    try:
        found = _group_options(argv)
    except Exception:  # noqa: BLE001 (Hydra internals moved: Hydra reports unknown options)
        return
    if found is None:
        return
    overrides, options = found
    for arg in overrides:
        key, sep, value = arg.partition("=")
        group = key.lstrip("+~").split("@", 1)[0]
        if not sep or group.startswith("hydra") or "." in group:
            continue
        try:
            known = options(group)
        except Exception:  # noqa: BLE001 (a bad search path: Hydra's own error says which)
            return
        if not known:
            continue  # a value key, not a config group
        # A multirun sweep lists several (a,b); a group taking several options at once lists
        # them in brackets (callbacks=[default,early_stopping]).
        listed = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        for choice in (c.strip() for c in listed.split(",")):
            if choice and choice not in known and choice != "null":
                fail(f"unknown {group} '{choice}'; choose one of: {', '.join(known)} (an "
                     f"option of your own: --config-dir DIR with {group}/{choice}.yaml)"
                     f"{_unshipped_configs(argv)}")


# HYDRA_FULL_ERROR=1 set by the user: Hydra's own reports and full tracebacks, as Hydra does.
_SHOW_HYDRA_ERRORS = "HYDRA_FULL_ERROR" in os.environ


def _may_sweep(argv: list[str]) -> bool:
    """Whether the command line could start a sweep: ``-m``, or a value listing several
    (``a=1,2``) or drawn by a sweep function (``range(...)``)."""
    values = [a.partition("=")[2] for a in argv if "=" in a]
    return any(a in ("-m", "--multirun") for a in argv) or any(
        "," in v or v.startswith(SWEEP_FUNCTIONS) for v in values)


def main() -> None:
    global _SWEEP
    pause_for_startup()
    _SWEEP = _Sweep()  # (main() may run more than once in a process: trainer.fit, tests)
    argv = sys.argv[1:]
    for arg in argv:
        if "=" in arg and not arg.partition("=")[0].lstrip("+~"):
            fail(f"'{arg}' is not an override: write KEY=VALUE, for example trainer.epochs=3")
    _check_output_dirs(argv)
    _import_config_dir_project(argv)
    _check_search_path(argv)
    # A sweep's unknown option fails before its first job runs. A single run's is found when
    # Hydra fails on it (below): listing the groups costs every run 40 ms of start-up.
    if _may_sweep(argv):
        _check_group_choices(argv)
    register_configs()
    if _SHOW_HYDRA_ERRORS:
        _hydra_entry()
    else:
        # Hydra then raises its errors instead of printing them: each becomes one line here.
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            _hydra_entry()
        except InstantiationException:
            raise  # a class failed in its constructor: a bug there keeps its traceback
        except (HydraException, OmegaConfBaseException, YAMLError) as exc:
            _check_group_choices(argv)  # an unknown option: its own line, with the choices
            fail(one_line(exc))
    _SWEEP.end()
    freeze_for_exit()
