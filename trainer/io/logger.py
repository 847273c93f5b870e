"""Everything a run reports: console lines, the progress bar, the log outputs (TensorBoard by
default, ``logger.outputs``: trainer.io.outputs), and the run files.

Only the primary rank writes; on every other rank each method is a no-op. This class is where
that decision lives, so the loop never asks which rank it is.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from trainer.config.flat import flatten
from trainer.config.instantiate import safe_instantiate
from trainer.errors import UserError
from trainer.io.outputs import CSVOutput, LogOutput, TensorBoardOutput
from trainer.io.prediction_grid import draw_prediction_grid

log = logging.getLogger("trainer")


class Logger:
    def __init__(self, run_dir: Path, cfg, enabled: bool) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.cfg = cfg
        self._bar: tqdm | None = None
        # Built on every rank (a bad entry fails alike everywhere), opened on the primary.
        self.outputs = build_outputs(cfg.logger)
        self._open: list[LogOutput] = []
        self._notes: list[str] = []

    def start(self, data_description: str, resumed_from: Path | str | None, step: int) -> None:
        """Open the log outputs, write the resolved config and say what this run trains on."""
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for output in self.outputs:
            output.open(self.run_dir, step if resumed_from else None)
            self._open.append(output)
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        if self.cfg.description:
            self.info(f"recipe: {self.cfg.description}")
        self.info(f"data: {data_description}")
        self.info(f"run directory: {self.run_dir}")
        if resumed_from is not None:
            self.info(f"resuming from {resumed_from}")

    def info(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def note(self, text: str) -> None:
        """A short text for the next log line (a callback's live value, such as B_simple)."""
        self._notes.append(text)

    def take_notes(self) -> str:
        """The notes since the last log line, each after a space; then forgets them."""
        notes, self._notes = self._notes, []
        return "".join(f" {n}" for n in notes)

    def warning(self, text: str) -> None:
        if self.enabled:
            log.warning(text)

    def open_progress(self, total_steps: int, done_steps: int) -> None:
        if self.enabled and self.cfg.logger.progress_bar:
            self._bar = tqdm(
                total=total_steps, initial=done_steps, unit="step", dynamic_ncols=True,
                mininterval=0.5, disable=None,  # None: hide the bar when stderr is no TTY
            )
            if self._bar.disable:
                self._bar = None

    def advance(self, epoch: float | None, loss: float | None,
                samples_per_sec: float | None) -> None:
        """One optimizer step done; at a log line (``loss`` given) also refreshes the bar's
        epochs done, loss and samples/s."""
        if self._bar is None:
            return
        self._bar.update(1)
        if loss is not None:
            self._bar.set_postfix(epoch=f"{epoch:.2f}", loss=f"{loss:.4f}",
                                  sps=f"{samples_per_sec:,.0f}", refresh=False)

    def close_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @property
    def shows_progress(self) -> bool:
        return self._bar is not None

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Scalars of one step (floats or one-element tensors), to every log output."""
        if not self._open or not values:
            return
        values = {tag: float(value) for tag, value in values.items()}
        for output in self._open:
            output.scalars(values, step)

    def eval_scalars(self, values: dict[str, float], step: int, samples: int) -> None:
        """An evaluation's metrics against the step, and again against the training samples
        seen (``vs_samples/val/...``), the x-axis on which runs of different batch sizes
        line up."""
        self.scalars(values, step)
        self.scalars({f"vs_samples/{k}": v for k, v in values.items()}, samples)

    def texts(self, tag: str, texts: list[str], step: int) -> None:
        """Lines of generated text (TensorBoard's text tab)."""
        text = "\n\n".join(texts)
        for output in self._open:
            output.text(tag, text, step)

    def predictions(
        self, images: torch.Tensor, predicted: list[str], actual: list[str], step: int
    ) -> None:
        """A captioned grid of validation images with the model's guesses (wrong ones in red)."""
        if not self._open or len(images) == 0:
            return
        grid = draw_prediction_grid(images, predicted, actual)
        for output in self._open:
            output.image("val/predictions", grid, step)

    def close(self) -> None:
        """Close the bar and the outputs (safe to call twice, and after finish)."""
        self.close_progress()
        outputs, self._open = self._open, []
        for output in outputs:
            output.close()

    def finish(self, metrics: dict[str, Any]) -> None:
        """Write metrics.json, give every output the hyper-parameters and the final metrics,
        and close them."""
        self.close_progress()
        if not self.enabled:
            return
        path = self.run_dir / "metrics.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        if self._open:
            params = chosen_hparams(self.cfg, metrics.get("world_size", 1))
            final = final_metrics(metrics)
            for output in self._open:
                output.finish(params, final)
        self.close()

    def summary(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """The run's closing lines: what it reached, where everything is."""
        if not self.enabled:
            return
        def numbers(prefix: str) -> str:
            return ", ".join(f"{k[len(prefix):]} {v:.4f}" for k, v in sorted(metrics.items())
                             if k.startswith(prefix) and isinstance(v, int | float))

        tested, best_tested = numbers("test_"), numbers("best_test_")
        boards = [output.log_dir for output in self.outputs
                  if isinstance(output, TensorBoardOutput)]
        written = ["metrics.json", "config.yaml", "checkpoints/",
                   *(f"{board.name}/" for board in boards),
                   *(output.path.name for output in self.outputs if isinstance(output, CSVOutput))]
        lines = [
            f"done: {metrics['steps']} steps ({metrics['epochs']:.2f} epochs) on "
            f"{metrics['world_size']} worker(s) in {metrics['wall_time_s']:.1f} s, "
            f"{metrics['samples_per_sec']:,.0f} samples/s while training",
            f"test, final model (step {metrics['steps']}): {tested}" if tested else None,
            (f"best: {metrics['best_metric']} {metrics['best_value']:.4f} at step "
             f"{metrics['best_step']} ({metrics['best_checkpoint']})")
            if metrics.get("best_step") is not None else None,
            (f"test, best.pt (step {metrics['best_step']}): {best_tested}"
             if best_tested else None),
            f"checkpoint: {checkpoint}" if checkpoint else None,
            # (Not "run directory:": the start's line says that once per job.)
            f"outputs: {self.run_dir} ({', '.join(written)})",
            *(f"tensorboard --logdir {board}" for board in boards),
        ]
        for line in lines:
            if line:
                self.info(line)



def build_outputs(logger_cfg) -> list[LogOutput]:
    """The configured log outputs, in order (``logger.outputs``; ``logger.tensorboard=false``
    leaves out the one named tensorboard)."""
    built = []
    for name, node in logger_cfg.get("outputs", {}).items():
        if node is None or (name == "tensorboard" and not logger_cfg.tensorboard):
            continue
        output = safe_instantiate(node, f"logger.outputs.{name}")
        if not isinstance(output, LogOutput):
            raise UserError(f"logger.outputs.{name} is a {type(output).__name__}, not a "
                            "trainer.LogOutput; subclass it and override what it keeps")
        built.append(output)
    return built


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json's numbers that compare runs, as ``hparam/<name>``, in the order a user
    reads them: the final model's test metrics (accuracy and loss, then the task's own), the
    selected (best.pt) model's (``best_test_*``), the best evaluation's value under its metric's
    name (``best_val_accuracy``: one sweep's runs may watch different metrics) and the final
    validation metrics, then speed and length. (TensorBoard's HPARAMS tab reads each
    value from a scalar of that tag, so each is also a one-point chart in the ``hparam``
    group.)"""
    found = {k: float(v) for k, v in metrics.items()
             if isinstance(v, int | float) and not isinstance(v, bool) and k not in _NOT_COMPARED}
    # (best_<metric> below holds the selected model's value under its own name.)
    if metrics.get("best_metric") and isinstance(metrics.get("best_value"), int | float):
        found[f"best_{str(metrics['best_metric']).replace('/', '_')}"] = \
            float(metrics["best_value"])

    def rank(key: str) -> tuple:
        if key in _FIRST_METRICS:
            return (0, _FIRST_METRICS.index(key), key)
        return (1 if key.startswith("test_") else 2 if key.startswith("best_test_")
                else 3 if key.startswith(("best_", "val_")) else 4,
                0 if key not in _LAST_METRICS else 1 + _LAST_METRICS.index(key), key)

    return {f"hparam/{k}": found[k] for k in sorted(found, key=rank)}


# The hyper-parameters every run shows in the HPARAMS tab; the command line's overrides (and
# the recipe chosen) are added to them. The whole config stays in config.yaml.
_CORE_HPARAMS = ("data.batch_size", "optimizer._target_", "optimizer.lr", "schedule._target_",
                 "model._target_", "trainer.accumulate", "trainer.seed")
_FIRST_METRICS = ("test_accuracy", "test_loss")
_LAST_METRICS = ("samples_per_sec", "train_time_s", "steps", "epochs")
# Numbers of metrics.json that describe the run rather than compare it (in HPARAMS already,
# or only about this machine's start-up and teardown), and the best value's generic name.
_NOT_COMPARED = ("world_size", "global_batch_size", "final_global_batch_size", "startup_s",
                 "wall_time_s", "epoch_time_s", "best_value", "best_step")


def chosen_hparams(cfg, world_size: int) -> dict[str, Any]:
    """What this run chose, for the HPARAMS tab: the core keys, the workers, and under the
    ``trainer`` command every key (or group choice: ``recipe=mnist``) its command line or
    sweep set."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    # What the command line (a sweep) chose first: the columns that differ between runs.
    chosen: dict[str, Any] = {key: flat.get(key, value)
                              for key, value in _command_line_choices().items()}
    chosen.update({k: flat[k] for k in _CORE_HPARAMS if k in flat and k not in chosen})
    chosen["workers"] = world_size
    # Class paths as their class name: a column a person reads; lists (model.hidden) as text.
    return {k: (v.rsplit(".", 1)[-1] if k.endswith("._target_") and isinstance(v, str)
                else v if isinstance(v, int | float | str | bool) else str(v))
            for k, v in chosen.items() if v is not None}


def _command_line_choices() -> dict[str, str]:
    """KEY: VALUE of each override of the ``trainer`` command (a sweep job's included); empty
    outside it (``trainer.fit``)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    found = {}
    for override in HydraConfig.get().overrides.task:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~")
        if sep and not key.startswith("hydra"):
            found[key] = value
    return found
