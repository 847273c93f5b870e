"""``trainer-predict CHECKPOINT IMAGE...``: the class a trained model gives each image file.

CHECKPOINT is a checkpoint file or a run directory (its best.pt, the best evaluation's weights,
where there is one, else its newest good checkpoint; ``--last``: the newest). The model is
rebuilt from the config saved in the checkpoint; each image (any size, colour or grey) is
turned into the recipe's raw input by its data class's ``load_image`` and fed through the same
``transform`` as the test set. Prints one line per image: path, class name, probability.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from trainer.config.instantiate import (
    TRUST_VARIABLE,
    check_stored_config,
    check_target,
    safe_instantiate,
    upgrade_stored_config,
)
from trainer.errors import UserError
from trainer.io.checkpoint import open_checkpoint
from trainer.io.checkpoint_read import CheckpointError
from trainer.parallel.backends.base import Backend


def load(checkpoint: Path, trust: list[str] | tuple[str, ...] = (), last: bool = False) -> dict:
    """The state of a checkpoint file, or of a run directory's ``best.pt`` (its best
    evaluation; ``last``: its newest good checkpoint, also where it has no best.pt), whose
    stored config names only trusted classes (``trust``: packages the user trusts too)."""
    try:
        path, state = open_checkpoint(checkpoint, best=not last)
    except CheckpointError as why:
        raise UserError(f"{why}; pass a checkpoint file or a run directory") from None
    state["config"] = upgrade_stored_config(state["config"])
    check_stored_config(state["config"], f"checkpoint {path}", trust)
    return state


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

    state = load(checkpoint, trust, last)
    cfg = OmegaConf.create(state["config"])
    data_cls = check_target(cfg.data._target_, "data")
    if not hasattr(data_cls, "load_image"):
        raise UserError(
            f"the checkpoint's data ({cfg.data._target_}) does not take image files; "
            "trainer-predict works for image recipes (recipe=mnist, the digits default, "
            "recipe=asl_cnn, recipe=vgg16_transfer)"
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="trainer-predict", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint file or a run directory")
    parser.add_argument("images", type=Path, nargs="+", help="image files (any size, colour)")
    add_checkpoint_options(parser)
    args = parser.parse_args(argv)
    try:
        results = predict(args.checkpoint, args.images, args.trust, args.last)
    except UserError as exc:
        print(f"trainer-predict: error: {exc}", file=sys.stderr)
        sys.exit(2)
    for path, name, prob in results:
        print(f"{path}: {name} ({prob:.1%})")


if __name__ == "__main__":
    main()
