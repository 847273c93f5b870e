"""The GPU paths in one go: what this project's CPU machines cannot run, run where a GPU is.

    python bench/gpu_check.py [--epochs 20] [--out gpu_check.md]

Each row is the ``trainer`` command (``python -m trainer``, as a user starts it) on the
offline default job (the 8x8 digits MLP) or on MNIST-format files, on ``cuda``, with one
feature of the GPU path switched on; it reads the run's metrics.json. Printed: a table of
test accuracy, test loss, training samples/s and the ratio to the fp32 row, plus the checks
that have a right answer:

- fp16 with the loss scaler, alone and with clipping and the B_simple estimate (both read
  the gradient through the scaler's unscale);
- ``torch.compile`` (inductor, Triton kernels on the GPU);
- one process under ``torchrun``: the process group on NCCL, the model in DDP;
- float64 on the GPU against float64 on the CPU (the same job: the losses agree to ~1e-12
  where the kernels sum in another order);
- an interrupted fp16 run resumed (the scaler's state comes back from the checkpoint) against
  the same run uninterrupted, with ``trainer.deterministic=true``;
- dict batches from a map-style Dataset read in DataLoader workers (the example project's
  ``recipe=shapes_locate``: a model of two inputs and two outputs, the task's own forward and
  loss), moved to the GPU over their whole structure (pinned memory), in fp16 and in float64
  against the same job on the CPU.

Nothing here needs a GPU to import; without one every row says so and the script exits 1.
MNIST rows use real MNIST from $TRAINER_DATA_DIR when present, else synthetic files of its
format (the throughput is what they are for).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# The example user project (dict batches, a task with its own forward and loss).
SHAPES_ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT / "examples" / "user_project"),
                                             os.environ.get("PYTHONPATH", "")])}


def run_trainer(run_dir: Path, overrides: list[str], torchrun: bool = False,
                env: dict | None = None) -> tuple[dict | None, float, str]:
    """(metrics.json or None, wall seconds, the output's last lines)."""
    head = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
             "--nproc-per-node=1", "-m", "trainer"] if torchrun
            else [sys.executable, "-m", "trainer"])
    command = [*head, *overrides, f"hydra.run.dir={run_dir}",
               "logger.progress_bar=false", "logger.sample_predictions=0"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)
    wall = time.perf_counter() - started
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
    metrics_file = run_dir / "metrics.json"
    if done.returncode != 0 or not metrics_file.exists():
        return None, wall, tail
    return json.loads(metrics_file.read_text()), wall, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--mnist-epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()

    import torch

    from bench.common import mnist_root

    if not torch.cuda.is_available():
        print("no CUDA device visible: nothing to check here")
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    mnist, mnist_words = mnist_root(scratch)
    digits = [f"trainer.epochs={args.epochs}"]
    mnist_job = ["recipe=mnist", f"data.root={mnist}", f"trainer.epochs={args.mnist_epochs}",
                 "data.batch_size=512"]
    shapes = ["hydra.searchpath=[pkg://shapes.conf]", "recipe=shapes_locate", "data.workers=2",
              "optimizer=sgd", "trainer.epochs=2"]
    rows = [
        # (name, overrides, under torchrun)
        ("digits fp32", [*digits, "trainer.device=cuda"], False),
        ("digits bf16 autocast", [*digits, "trainer.precision=bf16"], False),
        ("digits fp16 + loss scaler", [*digits, "trainer.precision=16"], False),
        ("digits fp16 + clip + B_simple",
         [*digits, "trainer.precision=16", "trainer.clip_grad_norm=1.0",
          "trainer.noise_scale=always"], False),
        ("digits torch.compile", [*digits, "trainer.compile=true"], False),
        ("digits torchrun, NCCL, DDP", digits, True),
        ("digits float64 cuda", [*digits, "trainer.dtype=float64"], False),
        ("digits float64 cpu", [*digits, "trainer.dtype=float64", "trainer.device=cpu"], False),
        ("mnist fp32 batch 512", mnist_job, False),
        ("mnist bf16 batch 512", [*mnist_job, "trainer.precision=bf16"], False),
        ("mnist fp16 batch 512", [*mnist_job, "trainer.precision=16"], False),
        ("shapes dict batches fp16", [*shapes, "trainer.precision=16"], False),
        ("shapes dict batches float64 cuda", [*shapes, "trainer.dtype=float64"], False),
        ("shapes dict batches float64 cpu",
         [*shapes, "trainer.dtype=float64", "trainer.device=cpu"], False),
    ]
    results: dict[str, dict | None] = {}
    table = []
    for name, overrides, torchrun in rows:
        metrics, wall, tail = run_trainer(scratch / name.replace(" ", "_").replace(",", ""),
                                          overrides, torchrun,
                                          SHAPES_ENV if name.startswith("shapes") else None)
        results[name] = metrics
        if metrics is None:
            table.append([name, "FAILED", "", "", "", f"{wall:.1f}"])
            print(f"{name}: failed\n{tail}\n", flush=True)
            continue
        acc = metrics.get("test_accuracy")
        table.append([name, "ok", f"{acc:.4f}" if acc is not None else "-",
                      f"{metrics['test_loss']:.4f}", f"{metrics['samples_per_sec']:,.0f}",
                      f"{wall:.1f}"])
        print(f"{name}: ok ({wall:.1f} s)", flush=True)

    # An fp16 run stopped after its first epoch and resumed, against the same run whole.
    checks = []
    det = ["trainer.precision=16", "trainer.deterministic=true", "trainer.epochs=4"]
    whole, _, _ = run_trainer(scratch / "fp16_whole", det,
                              env={"CUBLAS_WORKSPACE_CONFIG": ":4096:8"})
    first, _, _ = run_trainer(scratch / "fp16_resumed", [*det[:-1], "trainer.epochs=2"],
                              env={"CUBLAS_WORKSPACE_CONFIG": ":4096:8"})
    resumed, _, tail = run_trainer(scratch / "fp16_resumed", det,
                                   env={"CUBLAS_WORKSPACE_CONFIG": ":4096:8"})
    if whole and first and resumed:
        diff = abs(whole["test_loss"] - resumed["test_loss"])
        checks.append(["fp16 resumed after epoch 2 of 4 vs whole (deterministic)",
                       f"|test loss diff| = {diff:.3g}", "exact" if diff == 0 else "differs"])
    else:
        checks.append(["fp16 resumed after epoch 2 of 4 vs whole (deterministic)", "FAILED", tail])
    gpu64, cpu64 = results.get("digits float64 cuda"), results.get("digits float64 cpu")
    if gpu64 and cpu64:
        diff = abs(gpu64["test_loss"] - cpu64["test_loss"])
        checks.append(["float64 cuda vs cpu, test loss after the same steps",
                       f"|diff| = {diff:.3g}", "agree to 1e-9" if diff < 1e-9 else "differ"])
    gpu64, cpu64 = (results.get("shapes dict batches float64 cuda"),
                    results.get("shapes dict batches float64 cpu"))
    if gpu64 and cpu64:
        diff = max(abs(gpu64[k] - cpu64[k]) for k in ("test_loss", "test_center_mse"))
        checks.append(["dict batches, float64 cuda vs cpu (test loss, centre MSE)",
                       f"|diff| = {diff:.3g}", "agree to 1e-9" if diff < 1e-9 else "differ"])
    ddp = results.get("digits torchrun, NCCL, DDP")
    if ddp:
        checks.append(["torchrun on cuda", f"world_size {ddp['world_size']}", "ran"])
    base = {"digits": results.get("digits fp32"), "mnist": results.get("mnist fp32 batch 512"),
            "shapes": results.get("shapes dict batches float64 cpu")}
    for row in table:
        ref = base[row[0].split()[0]]
        own = results.get(row[0])
        row.insert(5, f"{own['samples_per_sec'] / ref['samples_per_sec']:.2f}x"
                   if own and ref else "")

    name = torch.cuda.get_device_name(0)
    lines = [f"GPU check on {name}, torch {torch.__version__}, "
             f"{time.strftime('%Y-%m-%d')}; MNIST rows on {mnist_words}",
             "", "| run | result | test accuracy | test loss | samples/s | vs base | wall s |",
             "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    lines += ["", "vs base: samples/s over the job's fp32 row (shapes: its float64 CPU row)."]
    lines += ["", "| check | measured | verdict |", "|---|---|---|"]
    lines += ["| " + " | ".join(c.replace("\n", " ") for c in row) + " |" for row in checks]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    failed = any(row[1] == "FAILED" for row in table) or any(c[1] == "FAILED" for c in checks)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
