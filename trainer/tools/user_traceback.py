"""The user's own exception as the ``trainer`` command shows it: one line saying where it was
raised (the step, the rank, the callback hook or the Dataset item, and the last checkpoint:
trainer.errors.add_context), then the traceback of the user's frames only.

A model's ``forward`` that raises at step 40 is the user's bug, and its traceback is theirs to
read; the 50-70 frames of Hydra, the framework and torch above and below it are not. They come
back with ``TRAINER_FULL_ERROR=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``). An exception with no
frame outside those packages is the framework's own bug and keeps its whole traceback.
"""

from __future__ import annotations

import sys
import sysconfig
import traceback
from pathlib import Path

FULL_ERROR = ("TRAINER_FULL_ERROR", "HYDRA_FULL_ERROR")


def _framework_folders() -> tuple[str, ...]:
    import hydra
    import omegaconf
    import torch

    import trainer

    folders = [Path(m.__file__).parent for m in (trainer, hydra, omegaconf, torch)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return (*(str(f) + "/" for f in folders), str(stdlib) + "/")


def user_frames(error: BaseException) -> list[traceback.FrameSummary]:
    """The frames of ``error``'s traceback that are the user's (outside the framework, Hydra,
    OmegaConf, torch and Python's own library; site-packages of other libraries count as the
    user's: a library they chose)."""
    skip = _framework_folders()
    frames = traceback.extract_tb(error.__traceback__)
    return [f for f in frames if not f.filename.startswith(skip) and not
            f.filename.startswith("<frozen")]


def where(error: BaseException) -> str:
    """Where the framework saw it raised, innermost first: ``in the callback x.on_step_end,
    after step 3 on rank 0, the last checkpoint is ...``."""
    return ", ".join(getattr(error, "trainer_where", ()))


def report(error: BaseException, prefix: str = "trainer: error: ") -> bool:
    """Print ``error`` framed (the line, then the user's frames); False where it has no user
    frame (the framework's bug: the caller lets it through with its whole traceback)."""
    frames = user_frames(error)
    if not frames:
        return False
    name = type(error).__name__
    place = where(error)
    lines = [f"{prefix}your code raised {name}{' ' + place if place else ''}\n",
             "Traceback of your code (TRAINER_FULL_ERROR=1 shows every frame):\n",
             *traceback.format_list(frames),
             *traceback.format_exception_only(type(error), error)]
    sys.stderr.write("".join(line for line in lines if not line.startswith("(trainer: ")))
    sys.stderr.flush()
    return True
