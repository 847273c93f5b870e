"""fp32 against post-training (PTQ) and quantization-aware (QAT) int8, on the MNIST MLP and
the ASL CNN.

    python bench/qat.py [--mnist-epochs 10] [--asl-epochs 20] [--qat-epochs 2] [--threads 2]

Per workload, two runs with the same seed, the same number of epochs and a cosine learning-rate
schedule (so that QAT is the usual low-learning-rate fine-tune at the end of training):

- ``quant=ptq``: float training, then post-training quantization calibrated on 8 training
  batches; its report gives the fp32 row and the PTQ int8 row;
- ``quant=qat``: the same, but the last ``--qat-epochs`` epochs train with fake quantization
  (observers and BatchNorm frozen for the final half epoch); its report gives the QAT row.

Sizes are the saved torch.export programs; latency is the median CPU time of one batch of 256
(fp32 eager, int8 on oneDNN's int8 kernels); agreement is the share of test samples where the
int8 model predicts what its source model (fp32 for PTQ, fake-quant for QAT) predicts.
Goal (MNIST): QAT int8 within 0.5 points of fp32, no worse than PTQ, size <= 30% of fp32.
Data: real MNIST and the real 250-row Sign Language MNIST sample from $TRAINER_DATA_DIR when
present, else generated files of the same formats (the accuracies then mean little; the
script says which it used).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, mnist_root, print_table  # noqa: E402
from trainer.config import compose_config  # noqa: E402
from trainer.tools.train import train  # noqa: E402

COMMON = ("schedule=cosine", "trainer.resume=null", "trainer.log_every=1000",
          "logger.progress_bar=false", "logger.tensorboard=false", "logger.sample_predictions=0",
          "dist.threads_per_worker=null", "quant.latency_batch_size=256")


def asl_source() -> tuple[tuple[str, ...], str]:
    base = Path(os.environ.get("TRAINER_DATA_DIR", ROOT.parent / "shared" / "data"))
    if list((base / "sign_mnist").glob("sign_mnist_train*.csv")):
        return (f"data.root={base / 'sign_mnist'}",), f"real 250-row sample ({base / 'sign_mnist'})"
    return ("data.synthetic=true",), "generated stripes in the CSV format"


def steps_per_epoch(train_size: int, batch: int) -> int:
    return train_size // batch


def run(out: Path, *overrides: str) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        return train(compose_config(*overrides, *COMMON), out)


def workload(name: str, base: tuple[str, ...], epochs: int, qat_epochs: int,
             per_epoch: int, out: Path) -> list[list]:
    start = (epochs - qat_epochs) * per_epoch
    freeze = epochs * per_epoch - per_epoch // 2
    ptq = run(out / "ptq", *base, f"trainer.epochs={epochs}", "quant=ptq")["quant"]
    qat = run(out / "qat", *base, f"trainer.epochs={epochs}", "quant=qat",
              f"quant.start_step={start}", f"quant.freeze_observer_step={freeze}",
              f"quant.freeze_bn_step={freeze}")["quant"]
    fp32 = ptq["fp32_size_bytes"]

    def row(label, report, kind):
        size = report[f"{kind}_size_bytes"]
        return [name, label, f"{100 * report[f'{kind}_accuracy']:.2f}", f"{size:,}",
                f"{size / fp32:.0%}", f"{report[f'{kind}_latency_ms']:.2f}",
                "—" if kind == "fp32" else f"{100 * report['agreement']:.2f}"]

    return [row("fp32", ptq, "fp32"), row("PTQ int8", ptq, "int8"),
            row(f"QAT int8 (last {qat_epochs} epochs)", qat, "int8"),
            [name, "(QAT run, fp32 weights)", f"{100 * qat['fp32_accuracy']:.2f}", "", "", "",
             ""]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-epochs", type=int, default=10)
    parser.add_argument("--asl-epochs", type=int, default=20)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root, mnist = mnist_root(Path(tmp))
        mnist_args = ("recipe=mnist", f"data.root={root}", "data.download=false")
        rows += workload("MNIST MLP", mnist_args, args.mnist_epochs, args.qat_epochs,
                         steps_per_epoch(60000, 128), Path(tmp) / "mnist")
        print("MNIST done", file=sys.stderr, flush=True)
        asl_data, asl = asl_source()
        train_rows = 200 if asl_data[0].startswith("data.root") else 960
        rows += workload("ASL CNN", ("recipe=asl_cnn", *asl_data), args.asl_epochs,
                         args.qat_epochs, steps_per_epoch(train_rows, 32), Path(tmp) / "asl")
    print(f"data: MNIST {mnist}; ASL {asl}. torch {torch.__version__}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs; latency per batch of 256")
    print_table(["workload", "model", "test acc %", "size (bytes)", "of fp32", "latency ms",
                 "agreement %"], rows)
    fp32, ptq, qat = (float(rows[i][2]) for i in range(3))
    size = float(rows[2][4].rstrip("%")) / 100
    met = fp32 - qat <= 0.5 and qat >= ptq and size <= 0.30
    print(f"MNIST goal (QAT within 0.5 of fp32, >= PTQ, size <= 30%): fp32 {fp32:.2f}, PTQ "
          f"{ptq:.2f}, QAT {qat:.2f}, size {size:.0%} — {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
