"""The example user project (examples/user_project) put on PYTHONPATH, as if installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.compare import FLOAT64
from tests.helpers.config import ROOT, SHRINK
from tests.helpers.runs import finish

PROJECT = ROOT / "examples" / "user_project"
CONF = PROJECT / "shapes" / "conf"
ENV = {"PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")])}
SEARCHPATH = "hydra.searchpath=[pkg://shapes.conf]"
# The shapes recipe, small: 2 epochs of 16 steps (512 / 32), float64 for exact comparisons,
# SyncBN so that 2 workers normalise like 1, DataLoader workers reading the Dataset. SGD, not
# the recipe's Adam: Adam divides by sqrt(v) + eps, so a gradient component near 0 turns
# float64 rounding (1e-17) into update differences of lr/eps x 1e-17 = 1e-11 a step (measured:
# 1.7e-10 after 2 steps, 1.8e-8 after 32; SGD: 1.1e-16) - Adam's conditioning, not a bug.
SHAPES = ("recipe=shapes", "optimizer=sgd", "trainer.epochs=2", "logger.sample_predictions=0",
          FLOAT64, "model.sync_bn=true", "data.workers=2")


def trainer(*args: str, cwd: Path, launcher: list[str] | None = None, timeout: float = 300):
    command = [*(launcher or [sys.executable]), "-m", "trainer", *args, *SHRINK]
    proc = subprocess.Popen(command, cwd=cwd, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = finish(proc, timeout)  # past the timeout: every process's stacks
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={n}"]


FIT_SCRIPT = '''
import json, os, sys, torch, trainer
from shapes.callbacks import BestAccuracy, ClipGradNorm
from shapes.data import ShapeFields, ShapesDataset
from shapes.model import SmallCNN, TwoInputCNN
from shapes.tasks import ClassifyAndLocate
from shapes.transforms import ZeroInitHead

torch.manual_seed(0)
overrides = ["recipe=shapes", "optimizer=sgd", "trainer.epochs=2", "logger.sample_predictions=0",
             "trainer.dtype=float64", "model.sync_bn=true", "logger.progress_bar=false",
             "dist.threads_per_worker=1", "hydra.searchpath=[pkg://shapes.conf]"]
best = BestAccuracy(filename="fit_best.json")
metrics = trainer.fit(overrides, model=SmallCNN(width=8),
                      data=(ShapesDataset(512, seed=0), ShapesDataset(128, seed=1)),
                      callbacks=[best], run_dir=sys.argv[1])
# The checkpoint at work: the caller's model again, the test Dataset as the rows (the recipe's
# task, shapes.metrics.F1Classification, is built from the file: its package trusted).
evaluated = trainer.evaluate(sys.argv[1], model=SmallCNN(width=8), data=ShapesDataset(128, seed=1),
                             last=True, trust=["shapes"])
predicted = trainer.predict(sys.argv[1], ShapesDataset(128, seed=1), model=SmallCNN(width=8),
                            last=True, trust=["shapes"])
try:
    trainer.fit(["trainer.epochz=1"])
except trainer.UserError as exc:
    error = str(exc)
again = trainer.fit(["trainer.max_steps=3", "logger.progress_bar=false"],
                    run_dir=sys.argv[1] + "_again")
# The project's own transform and gradient hook, given to fit: one step from a zeroed head.
clip = ClipGradNorm(max_norm=0.05)
hooked = trainer.fit([*overrides, "trainer.max_steps=1"], model=SmallCNN(width=8),
                     data=(ShapesDataset(512, seed=0), ShapesDataset(128, seed=1)),
                     transforms=[ZeroInitHead()], callbacks=[clip],
                     run_dir=sys.argv[1] + "_hooked")
# Dict batches, a model of two inputs and two outputs, and the project's task that feeds the
# batch and trains both outputs as one loss; in micro-batches, with per-sample dropout.
located = trainer.fit([*overrides, "trainer.max_steps=8", "trainer.accumulate=2"],
                      model=TwoInputCNN(locate=True),
                      data=(ShapeFields(512, seed=0, center=True),
                            ShapeFields(128, seed=1, center=True)),
                      task=ClassifyAndLocate(), run_dir=sys.argv[1] + "_located")
if os.environ.get("RANK", "0") == "0":  # one line, not one per worker (they interleave)
    print("RESULT", json.dumps({"steps": metrics["steps"], "acc": metrics["test_accuracy"],
                                "best": best.best, "best_value": metrics["best_value"],
                                "error": error, "again": again["steps"],
                                "hooked_loss": hooked["train_loss"], "clipped": clip.steps,
                                "center_mse": located["test_center_mse"],
                                "evaluated": evaluated["dataset_accuracy"],
                                "predicted": sum(r["prediction"] == r["target"]
                                                 for r in predicted) / len(predicted)}))
'''
