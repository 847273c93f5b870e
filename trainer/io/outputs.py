"""Log outputs: where a run's scalars, texts, images, hyper-parameters and final metrics go.

Each entry of ``logger.outputs`` names one (``_target_``); every output gets the same calls,
on the primary rank only (trainer.io.logger.Logger decides that, and keeps the console and
the progress bar). Shipped: :class:`TensorBoardOutput` (the default, ``<run>/tb``) and
:class:`CSVOutput` (``<run>/scalars.csv``, ``logger=csv``). A user's own output subclasses
:class:`LogOutput` and overrides what it keeps::

    logger:
      outputs:
        mine: {_target_: mypkg.MyOutput}

``logger.outputs.NAME=null`` removes one (``logger.tensorboard=false`` is the short form for
the TensorBoard output).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch


class LogOutput:
    """One destination of the run's logs; every method is optional."""

    def open(self, run_dir: Path, resumed_step: int | None) -> None:
        """Before the first value. ``resumed_step``: the checkpoint's step when the run resumes
        (what an earlier attempt logged after it is logged again: drop it), else None."""

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Scalars of one step, as floats (log lines every ``trainer.log_every`` steps,
        evaluations; ``vs_samples/...`` entries are logged against samples seen)."""

    def text(self, tag: str, text: str, step: int) -> None:
        """Text (generated headlines)."""

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """An image, a CHW uint8 tensor (the sample-predictions grid)."""

    def finish(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """The end of the run: the hyper-parameters it chose and its final numeric metrics
        (``hparam/<name>``: what metrics.json holds, numbers only)."""

    def close(self) -> None:
        """Flush and release files (also after an error; may be called twice)."""


class TensorBoardOutput(LogOutput):
    """TensorBoard event files in ``<run dir>/<folder>``; the HPARAMS tab lines runs up."""

    def __init__(self, folder: str = "tb") -> None:
        self.folder = folder
        self.writer = None

    def open(self, run_dir: Path, resumed_step: int | None) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard import SummaryWriter

        self._summary = Summary
        self.log_dir = Path(run_dir) / self.folder
        # On resume, TensorBoard drops what the killed run logged after its checkpoint
        # (purge_step: the first step this run logs again), so none shows twice.
        self.writer = SummaryWriter(log_dir=str(self.log_dir),
                                    purge_step=resumed_step + 1 if resumed_step is not None
                                    else None)

    def scalars(self, values: dict[str, float], step: int) -> None:
        # One event for all of them: add_scalar writes an event per value, and TensorBoard's
        # writer thread, which serialises and checksums each one, competes with training for
        # the cores (docs/performance.md).
        summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=value)
                                       for tag, value in values.items()])
        self.writer.file_writer.add_summary(summary, step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        self.writer.add_image(tag, image, step)

    def finish(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        # Written into this run's own event file (SummaryWriter.add_hparams would open a new
        # sub-run), so the HPARAMS tab lines sweep jobs up side by side.
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        for summary in hparams_summaries(hparams, metrics):
            self.writer.file_writer.add_summary(summary)
        step = int(metrics.get("hparam/steps", 0))
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class CSVOutput(LogOutput):
    """``<run dir>/<filename>``: one row per scalar (``step,tag,value``), the final metrics as
    ``hparam/...`` rows, and the hyper-parameters in ``hparams.json`` beside it; a resumed run
    drops the rows an earlier attempt wrote after its checkpoint, as TensorBoard does."""

    def __init__(self, filename: str = "scalars.csv") -> None:
        self.filename = filename
        self.file = None

    def open(self, run_dir: Path, resumed_step: int | None) -> None:
        self.path = Path(run_dir) / self.filename
        kept = []
        if resumed_step is not None and self.path.exists():
            with self.path.open(newline="") as old:
                kept = [row for row in csv.reader(old)][1:]
            kept = [row for row in kept if row and int(row[0]) <= resumed_step]
        self.file = self.path.open("w", newline="")
        self.rows = csv.writer(self.file)
        self.rows.writerows([["step", "tag", "value"], *kept])

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.rows.writerows([step, tag, repr(value)] for tag, value in values.items())

    def finish(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        step = int(metrics.get("hparam/steps", 0))
        self.scalars(metrics, step)
        (self.path.parent / "hparams.json").write_text(json.dumps(hparams, indent=2) + "\n")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
