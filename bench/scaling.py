"""Data-parallel scaling: 1 worker vs 2 workers (1 thread each) for each backend.

    python bench/scaling.py [--mlp-steps 150] [--cnn-steps 30]

For the MNIST MLP and the ASL-sized CNN (Conv 75/50/25), at 128 samples per worker, it runs
a hand-written DDP loop (the anchor, bench/ddp_anchor.py), trainer over torch.distributed and
trainer over Horovod (when installed), each with 1 and 2 workers, and prints samples/s and the
scaling efficiency = 2-worker samples/s / (2 x 1-worker samples/s). Then the allreduce bus
bandwidth of each backend beside a plain in-memory copy. Everything runs in this one command,
side by side; real MNIST from $TRAINER_DATA_DIR/mnist when present, else synthetic files.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import mnist_root, print_table  # noqa: E402

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PER_WORKER = 128


def _run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def _launcher(kind: str, n: int) -> list[str]:
    if kind == "horovod":
        return [str(BIN / "horovodrun"), "-np", str(n), "-H", f"localhost:{n}", "--gloo",
                sys.executable]
    return [str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={n}"]


def _last_json(out: str) -> dict:
    """The last JSON line a worker printed (horovodrun prefixes lines with [rank]<stdout>:)."""
    for line in reversed(out.strip().splitlines()):
        line = line.split("<stdout>:", 1)[-1].strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no result line in:\n{out[-2000:]}")


def anchor(model: str, n: int, steps: int, root: Path, scratch: Path) -> float:
    out = _run([*_launcher("torch", n), str(HERE / "ddp_anchor.py"), "--model", model,
                "--root", str(root), "--steps", str(steps),
                "--batch-per-worker", str(PER_WORKER)], scratch)
    return _last_json(out)["samples_per_sec"]


def trainer(backend: str, model: str, n: int, steps: int, root: Path, scratch: Path,
            *extra: str) -> float:
    tag = "".join(f"-{e.split('=')[0].rsplit('.', 1)[-1]}" for e in extra)  # no '=' in paths
    run_dir = scratch / f"{backend}-{model}-{n}{tag}"
    overrides = [
        "recipe=mnist", f"data.root={root}", "data.download=false",
        f"data.batch_size={PER_WORKER * n}", f"trainer.max_steps={steps}",
        f"trainer.log_every={steps}", "logger.tensorboard=false", "logger.progress_bar=false",
        "logger.sample_predictions=0", "dist.threads_per_worker=1",
        f"dist.backend={backend if n > 1 else 'none'}", f"hydra.run.dir={run_dir}", *extra,
    ]
    if model == "cnn":
        overrides += ["model=asl_cnn", "model.num_classes=10"]
    if n == 1:
        _run([sys.executable, "-m", "trainer", *overrides], scratch)
    elif backend == "horovod":
        _run([*_launcher("horovod", n), "-m", "trainer", *overrides], scratch)
    else:
        _run([*_launcher("torch", n), "-m", "trainer", *overrides], scratch)
    return json.loads((run_dir / "metrics.json").read_text())["samples_per_sec"]


def allreduce(backend: str, scratch: Path) -> dict:
    script = [str(HERE / "allreduce.py"), "--backend", backend]
    out = _run([*_launcher(backend, 2), *script], scratch)
    return _last_json(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlp-steps", type=int, default=150)
    parser.add_argument("--cnn-steps", type=int, default=30)
    args = parser.parse_args()
    backends = ["torch"] + (["horovod"] if importlib.util.find_spec("horovod") else [])
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        root, source = mnist_root(scratch)
        rows = []
        for model, steps in (("mlp", args.mlp_steps), ("cnn", args.cnn_steps)):
            ref = [anchor(model, n, steps, root, scratch) for n in (1, 2)]
            rows.append([model, "hand-written DDP (anchor)", f"{ref[0]:,.0f}", f"{ref[1]:,.0f}",
                         f"{ref[1] / (2 * ref[0]):.0%}", "1.00"])
            # The last row measures B_simple (trainer.noise_scale=always: one norm per
            # parameter per step, in parameter hooks) to show what it costs.
            variants = [(b, ()) for b in backends] + [("torch", ("trainer.noise_scale=always",))]
            for backend, extra in variants:
                ours = [trainer(backend, model, n, steps, root, scratch, *extra) for n in (1, 2)]
                label = f"trainer, {backend}" + (", B_simple on" if extra else "")
                rows.append([model, label, f"{ours[0]:,.0f}", f"{ours[1]:,.0f}",
                             f"{ours[1] / (2 * ours[0]):.0%}", f"{ours[1] / ref[1]:.2f}"])
        print(f"{PER_WORKER} samples per worker, 1 thread per worker, data: {source}, "
              f"{os.cpu_count()} CPUs")
        print_table(["model", "loop", "1 worker samples/s", "2 workers samples/s",
                     "scaling efficiency", "2-worker vs anchor"], rows)
        bw_rows = []
        for backend in backends:
            result = allreduce(backend, scratch)
            bw_rows.append([backend, f"{result['bus_gb_per_s']:.2f}",
                            f"{result['ms_per_allreduce']:.1f}", f"{result['copy_gb_per_s']:.2f}",
                            f"{result['bus_gb_per_s'] / result['copy_gb_per_s']:.1%}"])
        print("allreduce of 64 MiB float32 over 2 workers on this machine")
        print_table(["backend", "bus GB/s", "ms per allreduce", "memory copy GB/s",
                     "allreduce / copy"], bw_rows)


if __name__ == "__main__":
    main()
