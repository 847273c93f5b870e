"""``trainer-export CHECKPOINT [quant=qat|ptq] [quant.KEY=VALUE ...] [--out DIR]``.

Turns any checkpoint into an int8 model and a report (``trainer/quant/export.py``): a
checkpoint trained with ``quant=qat`` is converted (``quant=qat``, its default); a float
checkpoint is post-training quantized (``quant=ptq``, its default), calibrated on
``quant.calibration_batches`` training batches. The model and data come from the config saved
in the checkpoint, so the data must be where it was during training. The files go to the
checkpoint's run directory unless ``--out`` names another folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from trainer.errors import UserError


def _apply(cfg, overrides: list[str]) -> None:
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not (key == "quant" or key.startswith("quant.")):
            raise UserError(f"'{item}': trainer-export takes quant=qat|ptq and "
                            "quant.KEY=VALUE overrides only")
        if key == "quant":
            cfg.quant.mode = value
        elif key.split(".", 1)[1] not in cfg.quant:
            raise UserError(f"'{item}': no such key; quant has {', '.join(cfg.quant)}")
        else:
            OmegaConf.update(cfg, key, OmegaConf.select(OmegaConf.from_dotlist([item]), key))


def export_checkpoint(checkpoint: Path, overrides: list[str], out: Path | None = None,
                      trust: list[str] | tuple[str, ...] = (), last: bool = False) -> dict:
    from trainer.config.instantiate import safe_instantiate
    from trainer.config.validate import validate
    from trainer.engine.build import build_data, build_model
    from trainer.engine.inference import load_trusted
    from trainer.engine.seeding import seed_everything
    from trainer.io.checkpoint import open_checkpoint
    from trainer.parallel.backends.base import Backend
    from trainer.quant.export import float_twin, quantize_and_report
    from trainer.quant.qat import QATModel, example_batch

    _, state = load_trusted(checkpoint, trust, last)
    cfg = OmegaConf.create(state["config"])
    trained_with = cfg.quant.mode
    cfg.quant.mode = "qat" if trained_with == "qat" else "ptq"
    _apply(cfg, overrides)
    validate(cfg)
    if cfg.quant.mode not in ("qat", "ptq"):
        raise UserError(f"quant={cfg.quant.mode}: trainer-export makes int8 models; use qat "
                        "or ptq")
    if cfg.quant.mode == "qat" and trained_with != "qat":
        raise UserError(f"{checkpoint} was trained without quant=qat, so it has no "
                        "fake-quant model to convert; use quant=ptq (post-training "
                        "quantization) or train with quant=qat")
    if out is None:
        found = open_checkpoint(checkpoint, best=not last)[0]
        out = found.parent.parent if found.parent.name == "checkpoints" else found.parent
    seed_everything(cfg.trainer.seed)
    backend = Backend(torch.device("cpu"))
    cfg.data.device = "cpu"
    data = build_data(cfg.data, backend)
    model = build_model(cfg.model, backend, **state.get("model_kwargs", {}))
    task = safe_instantiate(cfg.task, "task")
    common = dict(data=data, task=task, out_dir=out, quant_cfg=cfg.quant)
    if trained_with != "qat":
        model.load_state_dict(state["model"])
        return quantize_and_report(model, **common)
    qat = QATModel(model, example_batch(data))
    qat.load_state_dict(state["model"])
    twin = float_twin(cfg, qat, state.get("model_kwargs", {}))
    return quantize_and_report(twin, **common, qat_model=qat if cfg.quant.mode == "qat" else None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="trainer-export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint file or a run directory")
    parser.add_argument("overrides", nargs="*", help="quant=qat|ptq, quant.KEY=VALUE")
    parser.add_argument("--out", type=Path, help="folder for the int8 model and the report")
    from trainer.tools.predict import add_checkpoint_options

    add_checkpoint_options(parser)
    args = parser.parse_args(argv)
    try:
        report = export_checkpoint(args.checkpoint, args.overrides, args.out, args.trust,
                                   args.last)
    except UserError as exc:
        print(f"trainer-export: error: {exc}", file=sys.stderr)
        sys.exit(2)
    from trainer.quant.export import markdown

    print(markdown(report), end="")


if __name__ == "__main__":
    main()
