"""``trainer-evaluate CHECKPOINT [KEY=VALUE ...]``: a trained model's metrics on a split.

CHECKPOINT is a checkpoint file or a run directory (its best.pt, the best evaluation's weights
where there is one; ``--last``: its newest checkpoint). The model, the data and the task are
rebuilt from the config stored in the checkpoint (a package of your own: ``--trust PKG``);
``KEY=VALUE`` changes that config (``data.root=...`` where the data lives now). Prints one line
of metrics; ``--output FILE.json`` writes them. Under torchrun, mpirun or srun every worker
evaluates its share and the numbers are those of one worker.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainer.errors import UserError, WorkerLost
from trainer.tools.predict import add_checkpoint_options, fail, split_arguments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="trainer-evaluate",
                                     description=__doc__.split("\n")[0].split(": ", 1)[1])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint file or a run directory")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="changes to the checkpoint's stored config")
    parser.add_argument("--split", default="test", help="the run's data split: test, val or train")
    parser.add_argument("--output", type=Path, help="also write the metrics to this JSON file")
    add_checkpoint_options(parser)
    args = parser.parse_intermixed_args(argv)
    from trainer.engine.inference import evaluate_restored, restore

    try:
        _, overrides = split_arguments(args.overrides, "trainer-evaluate")
        restored = restore(args.checkpoint, overrides, trust=args.trust, last=args.last)
        try:
            metrics = evaluate_restored(restored, args.split)
            primary = restored.backend.is_primary
        finally:
            restored.backend.close()
    except UserError as exc:
        fail("trainer-evaluate", exc, everywhere=isinstance(exc, WorkerLost))
    if not primary:
        return
    step = (restored.state.get("progress") or {}).get("step")
    print(f"{restored.path} (step {step}), {args.split}: "
          + ", ".join(f"{k.split('_', 1)[1]} {v:.6g}" for k, v in metrics.items()))
    if args.output:
        args.output.write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
