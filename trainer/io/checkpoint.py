"""Rank-0 checkpoint files: atomic writes, a ``last.pt`` link, pruning, and a safe read-back.

Files are ``checkpoints/step-00001234.pt``; ``last.pt`` is a symbolic link to the newest one.
A write goes to a temporary file of its own (named by process and a random token) that is
flushed, fsynced and renamed, and only then does ``last.pt`` move, so a crash at any instant
leaves the previous good checkpoint in place; a write that fails (a full disk) removes its
temporary file and says how much space it needed.

One run owns a run directory at a time (an ``flock`` on ``.trainer.lock``, which the kernel
drops when the process dies, SIGKILL included). The checkpoints folder holds one run's lineage
only: starting fresh where another run left checkpoints, or resuming from an older step than
the folder's newest, first moves the files that are not this lineage's aside
(``checkpoints.replaced-<time>/``), so pruning, which follows the order this run wrote its
files, never deletes this run's newest checkpoint and ``resume=auto`` never picks another run's.
Reading one file back, which is not trusted, is trainer.io.checkpoint_read's.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import torch

from trainer.errors import UserError
from trainer.io.checkpoint_read import (
    FORMAT_VERSION,
    CheckpointError,
    non_finite_tensors,
    read_checkpoint,
)
from trainer.io.state_types import encode

log = logging.getLogger(__name__)

_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")
LAST = "last.pt"
BEST, BEST_RECORD = "best.pt", "best.json"
LOCK = ".trainer.lock"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _step_of(path: Path) -> int:
    match = _STEP_FILE.match(path.name)
    return int(match.group(1)) if match else -1


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


class _WriteErrors:
    """A file's ``write`` that remembers the first OSError it raised."""

    def __init__(self, handle) -> None:
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.handle.flush()


class _ByteCounter:
    """A write-only file that counts what torch.save writes to it."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


class Checkpointer:
    """Writes checkpoints on the primary rank (``enabled``) and reads them on any rank.

    The run's stateful components are registered once (:meth:`register`, trainer.io.state);
    :meth:`save` gathers their state on every rank and writes it, :meth:`load` hands a
    checkpoint's state back to them, in registration order."""

    def __init__(self, directory: Path, keep_last: int, enabled: bool) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.enabled = enabled
        self.components: dict[str, Any] = {}
        # Saved beside the components in every checkpoint: what rebuilding the model from the
        # file alone needs (trainer-predict, -export): the config, the data's sizes. Set once.
        self.metadata: dict[str, Any] = {}
        # This run's checkpoints, oldest first: the files it adopted when it resumed, then
        # the ones it wrote. Pruning deletes only from here.
        self.written: list[Path] = []
        self._lock: int | None = None

    def start(self, resume: str | None) -> tuple[Path, dict[str, Any]] | None:
        """On the primary rank, before anything is built: take the run directory, find the
        checkpoint ``trainer.resume`` asks for, and leave only its lineage in the folder."""
        self._take_directory()
        resumed = resolve_resume(resume, self.directory.parent)
        mine = resumed is not None and resumed[0].parent.resolve() == self.directory.resolve()
        step = _step_of(resumed[0]) if mine else None
        others = [p for p in self.step_files() if step is None or _step_of(p) > step]
        # best.pt belongs to the lineage if its record is the best the resumed state knows.
        best_step = (resumed[1].get("callbacks", {}).get("best_checkpoint", {}).get("step")
                     if mine else None)
        if self.best_step_on_disk() not in (None, best_step):
            others += [p for p in (self.directory / BEST, self.directory / BEST_RECORD)
                       if p.exists()]
        if others:
            self._move_aside(others, "an earlier run's" if step is None else
                             f"later than the resumed step {step}")
        self.written = sorted(self.step_files(), key=_step_of)
        return resumed

    def best_step_on_disk(self) -> int | None:
        """The step of the folder's best.pt, from its record (None: no best.pt); -1 for a
        best.pt without a readable record."""
        if not (self.directory / BEST).exists():
            return None
        try:
            return int(json.loads((self.directory / BEST_RECORD).read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1

    def adopt(self) -> None:
        """On the primary rank, when the same run is built again (an elastic reset: its state
        is in memory): take the run directory back; every checkpoint in it is this run's."""
        self._take_directory()
        self.written = sorted(self.step_files(), key=_step_of)

    def _take_directory(self) -> None:
        self.check_writable()
        self._take_lock()
        for stale in self.directory.glob(".*.tmp"):  # a killed writer's; the lock is ours
            stale.unlink(missing_ok=True)

    def close(self) -> None:
        """Give the run directory up (the process's exit does it too)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _take_lock(self) -> None:
        path = self.directory.parent / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(
                f"the run directory {self.directory.parent} is in use by a live run ({holder}); "
                "wait for it to end, or choose another hydra.run.dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._lock = fd

    def _move_aside(self, files: list[Path], whose: str) -> None:
        """Move checkpoints that are not this run's lineage into a sibling folder."""
        aside = self.directory.with_name(
            f"{self.directory.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        while aside.exists():
            aside = aside.with_name(aside.name + "x")
        aside.mkdir()
        for path in files:
            os.replace(path, aside / path.name)
        last = self.directory / LAST
        if last.is_symlink() and not last.exists():
            last.unlink()
        _fsync_dir(self.directory)
        log.warning("moved %d checkpoint(s) (%s: %s) to %s; this run does not use them",
                    len(files), whose, ", ".join(p.name for p in files[:3])
                    + (", ..." if len(files) > 3 else ""), aside)

    def register(self, name: str, component: Any) -> None:
        """Save and restore ``component`` (``state_dict`` / ``load_state_dict``) as ``name``."""
        if name in self.components or name in ("format", "config", "model_kwargs"):
            raise ValueError(f"checkpoint component {name!r} is already registered")
        self.components[name] = component

    def snapshot(self) -> dict[str, Any]:
        """What a checkpoint holds: every component's state, checked to load back
        (trainer.io.state_types), and the metadata."""
        return {**{name: encode(c.state_dict(), name) for name, c in self.components.items()},
                **self.metadata}

    def check(self, *names: str) -> None:
        """Refuse now what the first save would refuse in these components' states (the
        callbacks', user code, before the first step)."""
        for name in names:
            encode(self.components[name].state_dict(), name)

    def save(self, step: int, share=None, best: dict | None = None) -> Path | None:
        """The :meth:`snapshot` as the checkpoint of ``step``. Call it on every rank: a
        component's state may need all of them (the RNG states are gathered); only the
        primary rank writes. ``share`` (the backend's ``on_primary``) hands the primary's
        outcome to every rank: its path, or its error (a full disk), so that no rank trains on
        alone. ``best``: write it as ``best.pt`` instead, with this record (metric, value)
        beside it in ``best.json``."""
        state = self.snapshot()
        if best is not None:
            write = lambda: self.write_best(state, step, best)  # noqa: E731
        else:
            write = lambda: self.write(state, step)  # noqa: E731
        return share(write) if share is not None else write()

    def load(self, state: dict[str, Any]) -> None:
        """Give each component its part of ``state``; a component the checkpoint has no entry
        for (written before it existed) keeps its fresh state."""
        for name, component in self.components.items():
            if name in state:
                component.load_state_dict(state[name])

    def check_writable(self) -> None:
        """UserError now, rather than at the first save, if the folder cannot be written."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UserError(
                f"cannot write checkpoints to {self.directory} ({exc.strerror}); point "
                "hydra.run.dir at a writable directory"
            ) from None

    def step_files(self) -> list[Path]:
        """Checkpoint files in the directory, newest (highest step) first."""
        if not self.directory.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.directory.iterdir()
            if (m := _STEP_FILE.match(p.name))
        ]
        return [p for _, p in sorted(found, reverse=True)]

    def write(self, state: dict[str, Any], step: int) -> Path | None:
        """Write ``state`` as the checkpoint of ``step``; no-op on non-primary ranks."""
        if not self.enabled:
            return None
        path = self._write_file(state, step, f"step-{step:08d}.pt")
        link_tmp = self.directory / f".{LAST}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        link_tmp.symlink_to(path.name)
        os.replace(link_tmp, self.directory / LAST)
        _fsync_dir(self.directory)
        self.written = [p for p in self.written if p != path] + [path]
        self._prune()
        return path

    def write_best(self, state: dict[str, Any], step: int, record: dict) -> Path | None:
        """Write ``state`` as ``best.pt`` (kept apart from pruning and ``last.pt``), then its
        record (step, metric, value) as ``best.json``; no-op on non-primary ranks."""
        if not self.enabled:
            return None
        path = self._write_file(state, step, BEST)
        tmp = self.directory / f".{BEST_RECORD}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        tmp.write_text(json.dumps({"step": step, **record}) + "\n")
        os.replace(tmp, self.directory / BEST_RECORD)
        _fsync_dir(self.directory)
        return path

    def _write_file(self, state: dict[str, Any], step: int, name: str) -> Path:
        """Write ``state`` to ``name`` atomically (a unique temporary file, fsynced, renamed);
        a full disk is one line and leaves no partial file."""
        bad = non_finite_tensors(state["model"])
        if bad:
            raise UserError(
                f"refusing to save a checkpoint at step {step}: non-finite weights in "
                f"{', '.join(bad[:3])}; lower optimizer.lr or check the data"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / name
        state = {"format": FORMAT_VERSION, **state}
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        sink = None
        try:
            with open(tmp, "wb") as handle:
                sink = _WriteErrors(handle)
                torch.save(state, sink)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            # torch's zip writer turns a failed write into "RuntimeError: unexpected pos";
            # the OSError the file raised says what really happened.
            error = exc if isinstance(exc, OSError) else sink.error if sink else None
            if error is not None and error.errno in _NO_SPACE:
                raise UserError(self._no_space(path, state, error)) from None
            raise
        return path

    def _no_space(self, path: Path, state: dict[str, Any], exc: OSError) -> str:
        """The one line for a checkpoint that did not fit: which file, how much it needed."""
        counter = _ByteCounter()
        torch.save(state, counter)
        free = shutil.disk_usage(self.directory).free
        last = self.directory / LAST
        kept = (f"last.pt still points at {last.resolve().name}, which is intact"
                if last.exists() else "no earlier checkpoint of this run exists")
        return (f"checkpoint {path} did not fit ({exc.strerror}): it needs {_mb(counter.size)}, "
                f"{_mb(free)} is free on that disk; {kept}. Free space (or point hydra.run.dir "
                "elsewhere) and run again with trainer.resume=auto")

    def _prune(self) -> None:
        while len(self.written) > self.keep_last:
            self.written.pop(0).unlink(missing_ok=True)

    def load_latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that loads, falling back past corrupt ones with a warning;
        None where the folder has none. CheckpointError where it has some and none loads
        (never "start over" silently over a run's checkpoints)."""
        candidates = []
        last = self.directory / LAST
        if last.is_symlink() or last.exists():
            candidates.append(last.resolve())
        candidates += [p for p in self.step_files() if p.resolve() not in candidates]
        failed: list[tuple[Path, str]] = []
        for path in candidates:
            try:
                state = read_checkpoint(path)
            except CheckpointError as why:
                failed.append((path, str(why)))
                continue
            for bad, why in failed:
                log.warning("checkpoint %s %s; resuming from %s instead", bad, why, path)
            return path, state
        if failed:
            shown = "; ".join(f"{path.name} {why}" for path, why in failed[:3])
            more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
            raise CheckpointError(f"none of the {len(failed)} checkpoint(s) in {self.directory} "
                                  f"can be read: {shown}{more}")
        return None


def open_checkpoint(path: Path, best: bool = False) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file, or of a run directory (or its checkpoints/) the newest good one, or
    with ``best`` its ``best.pt`` where there is one (the best evaluation's weights).

    Raises CheckpointError saying what is wrong; callers add how to fix it.
    """
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        if best and (folder / BEST).exists():
            try:
                return folder / BEST, read_checkpoint(folder / BEST)
            except CheckpointError as why:
                log.warning("checkpoint %s %s; using the newest checkpoint instead",
                            folder / BEST, why)
        found = Checkpointer(folder, 1, enabled=False).load_latest()
        if found is None:
            raise CheckpointError(f"no usable checkpoint in {folder}")
        return found
    try:
        return path, read_checkpoint(path)
    except CheckpointError as why:
        raise CheckpointError(f"the checkpoint {why}") from None


def resolve_resume(resume: str | None, run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """Find the checkpoint ``trainer.resume`` asks for: ``auto``, a file, a run dir, or None."""
    if resume is None or str(resume).lower() in ("null", "none", "false", ""):
        return None
    if resume == "auto":
        try:
            return Checkpointer(run_dir / "checkpoints", 1, enabled=False).load_latest()
        except CheckpointError as why:
            raise UserError(
                f"trainer.resume=auto: {why}; nothing was loaded or moved. Restore them, resume "
                "from another with trainer.resume=PATH, or start over on purpose with "
                "trainer.resume=null (they are then moved aside, not deleted)") from None
    path = Path(resume).expanduser()
    try:
        return open_checkpoint(path)
    except CheckpointError as why:
        fix = ("point it at a checkpoint file or a run directory that has checkpoints/"
               if path.is_dir() else "pass another checkpoint, or trainer.resume=null to start "
               "fresh")
        raise UserError(f"trainer.resume={resume}: {why}; {fix}") from None
