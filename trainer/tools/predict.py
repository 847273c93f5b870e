"""``trainer-predict CHECKPOINT [IMAGE...]``: a trained model's prediction for each row.

CHECKPOINT is a checkpoint file or a run directory (its best.pt, the best evaluation's weights,
where there is one, else its newest good checkpoint; ``--last``: the newest). The model is
rebuilt from the config saved in the checkpoint (a package of your own: ``--trust PKG``).

- Image files (image recipes): each is turned into the recipe's raw input by its data class's
  ``load_image`` and fed through the same ``transform`` as the test set; one line per image:
  path, class name, probability.
- ``--split test`` (the default without images) or ``train``: every row of that split of the
  run's data, rebuilt from its config (any Dataset of your own; ``KEY=VALUE`` changes the
  stored config, as ``data.root=...``).
- ``--rows FILE``: a file of raw input rows (.csv of numbers, a header line allowed; .npy;
  .pt holding a tensor), one sample per row, through the run's data transform.

Rows go to ``--output FILE`` (.csv, .json or .jsonl) or, as CSV, to stdout: ``index``, the
task's ``prediction`` (with ``class`` and ``probability`` for a classifier), ``target`` where
the rows have one. Under torchrun, mpirun or srun each worker predicts its share; the first
rank writes them all, in order.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from trainer.config.instantiate import TRUST_VARIABLE, check_target, safe_instantiate
from trainer.errors import UserError, WorkerLost
from trainer.parallel import identity
from trainer.parallel.backends.base import Backend

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    """``--last`` and ``--trust PKG`` for the commands that rebuild a model from a checkpoint."""
    parser.add_argument(
        "--last", action="store_true",
        help="given a run directory, use its newest checkpoint instead of best.pt (the best "
             "evaluation's weights)",
    )
    parser.add_argument(
        "--trust", action="append", default=[], metavar="PKG",
        help="a package whose classes the checkpoint's config may build (your own model's "
             f"package; repeatable; also {TRUST_VARIABLE}=PKG,PKG)",
    )


def predict(checkpoint: Path, images: list[Path], trust: list[str] | tuple[str, ...] = (),
            last: bool = False) -> list[tuple[Path, str, float]]:
    """(image, class name, probability) for each image."""
    from trainer.engine.build import build_model
    from trainer.engine.inference import load_trusted

    _, state = load_trusted(checkpoint, trust, last)
    cfg = OmegaConf.create(state["config"])
    data_cls = check_target(cfg.data._target_, "data")
    if not hasattr(data_cls, "load_image"):
        raise UserError(
            f"the checkpoint's data ({cfg.data._target_}) does not take image files (its "
            "class has no load_image); predict its rows with --split test, or a file of "
            "input rows with --rows FILE"
        )
    model = build_model(cfg.model, Backend(torch.device("cpu")), **state.get("model_kwargs", {}))
    model.load_state_dict(state["model"])
    model.eval()
    task = safe_instantiate(cfg.task, "task")
    # Sizes the data class decodes to (an image folder's image_size); fixed for CSV images.
    sizes = {"image_size": cfg.data.image_size} if "image_size" in cfg.data else {}
    raws = []
    for path in images:
        try:
            raws.append(data_cls.load_image(path, **sizes))
        except (OSError, ValueError) as exc:  # PIL: missing, unreadable or not an image
            raise UserError(f"cannot read image {path}: {exc}") from None
    with torch.no_grad():
        probs = task.probabilities(model(data_cls.transform(torch.stack(raws))))
    best, index = probs.max(dim=1)
    # Class names found in the data (image folders) are in the checkpoint; fixed ones
    # (letters) are the data class's own.
    names = state.get("data", {}).get("class_names") or data_cls.class_names
    return [(p, names[i], float(b)) for p, i, b in zip(images, index.tolist(), best, strict=True)]


def fail(prog: str, exc: BaseException, everywhere: bool = False) -> None:
    """The one line and exit 2; under a launcher, each node's first rank says it (every rank
    fails alike), or ``everywhere`` for what each rank saw on its own (a lost worker)."""
    if everywhere or identity.from_environment().speaks_for_node:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        sys.stderr.flush()
    sys.exit(2)


def split_arguments(arguments: list[str], prog: str) -> tuple[list[Path], list[str]]:
    """Paths and ``KEY=VALUE`` overrides, told apart (an existing file is a path)."""
    paths, overrides = [], []
    for arg in arguments:
        if _OVERRIDE.match(arg) and not Path(arg).exists():
            overrides.append(arg)
        else:
            paths.append(Path(arg))
    if prog != "trainer-predict" and paths:
        raise UserError(f"'{paths[0]}' is not an override: write KEY=VALUE, for example "
                        "data.eval_batch_size=512")
    return paths, overrides


def read_rows(path: Path):
    """A tensor of input rows from a .csv (numbers; a header line allowed), .npy or .pt file."""
    import numpy as np

    if not path.is_file():
        raise UserError(f"--rows {path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False))
        if suffix == ".pt":
            rows = torch.load(path, weights_only=True, map_location="cpu")
            if not isinstance(rows, torch.Tensor):
                raise UserError(f"--rows {path} holds a {type(rows).__name__}, not a tensor")
            return rows
        if suffix == ".csv":
            with path.open(newline="") as f:
                lines = [line for line in csv.reader(f) if line]
            if lines and not _numeric(lines[0]):
                lines = lines[1:]  # a header
            return torch.tensor([[float(v) for v in line] for line in lines])
    except (ValueError, OSError, RuntimeError) as exc:
        raise UserError(f"--rows {path} cannot be read as rows of numbers: "
                        f"{str(exc).splitlines()[0][:200]}") from None
    raise UserError(f"--rows {path}: use a .csv, .npy or .pt file")


def _numeric(line: list[str]) -> bool:
    try:
        [float(v) for v in line]
    except ValueError:
        return False
    return True


def write_predictions(rows: list[dict[str, Any]], output: Path | None) -> None:
    """``rows`` as CSV (to stdout without ``output``), JSON (a list) or JSON lines."""
    suffix = output.suffix.lower() if output else ".csv"
    if suffix == ".json":
        output.write_text(json.dumps(rows, indent=1) + "\n")
        return
    if suffix == ".jsonl":
        output.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with (output.open("w", newline="") if output else _stdout()) as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in rows:  # a row's list (several outputs) as JSON in its cell
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v
                             for k, v in row.items()})


class _stdout:
    def __enter__(self):
        return sys.stdout

    def __exit__(self, *exc) -> None:
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="trainer-predict", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint file or a run directory")
    parser.add_argument("inputs", nargs="*", metavar="IMAGE|KEY=VALUE",
                        help="image files (any size, colour), and changes to the stored config")
    parser.add_argument("--split", help="predict every row of the run's test, val or train split "
                                        "(the default without images)")
    parser.add_argument("--rows", type=Path, help="a .csv, .npy or .pt file of input rows")
    parser.add_argument("--output", type=Path,
                        help="write the rows to this .csv, .json or .jsonl file (default: CSV "
                             "on stdout)")
    add_checkpoint_options(parser)
    args = parser.parse_intermixed_args(argv)
    try:
        images, overrides = split_arguments(args.inputs, "trainer-predict")
        if images:
            if args.split or args.rows:
                raise UserError("give image files, --split or --rows, one of them")
            results = predict(args.checkpoint, images, args.trust, args.last)
        else:
            table, primary = _predict_rows(args, overrides)
    except UserError as exc:
        fail("trainer-predict", exc, everywhere=isinstance(exc, WorkerLost))
    if images:
        for path, name, prob in results:
            print(f"{path}: {name} ({prob:.1%})")
    elif primary:
        write_predictions(table, args.output)


def _predict_rows(args, overrides: list[str]) -> tuple[list[dict], bool]:
    from trainer.engine.inference import predict_restored, restore

    if args.output and args.output.suffix.lower() not in (".csv", ".json", ".jsonl"):
        raise UserError(f"--output {args.output}: use a .csv, .json or .jsonl file")
    rows = read_rows(args.rows) if args.rows else None
    restored = restore(args.checkpoint, overrides, trust=args.trust, last=args.last,
                       need_data=rows is None)
    try:
        return predict_restored(restored, args.split or "test", rows), \
            restored.backend.is_primary
    finally:
        restored.backend.close()


if __name__ == "__main__":
    main()
