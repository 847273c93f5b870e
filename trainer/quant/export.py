"""From a trained model to a real int8 model, measured against its float self.

QAT: the trained fake-quant graph is converted (``convert_pt2e``): weights become int8 tensors,
activations are quantized with the ranges the observers learned. PTQ (post-training
quantization, the baseline): a float model is captured, observed on ``calibration_batches``
training batches, and converted the same way. Either way:

- ``model_int8.pt2`` and ``model_fp32.pt2`` (``torch.export`` programs, loadable with
  ``torch.export.load(path).module()``) go to the output folder; their sizes are the sizes
  reported;
- accuracy of both on the whole test split (and of the fake-quant model, for QAT);
- CPU latency per batch of ``latency_batch_size``: the float model in eager PyTorch against the
  int8 program lowered to oneDNN's int8 kernels (``lower_pt2e_quantized_to_x86``), median of
  ``latency_repeats`` runs after a warm-up;
- ``agreement``: the share of test samples where the int8 model predicts what the model it
  came from predicts (the fake-quant model for QAT, the float model for PTQ).

``quant_report.json`` and ``quant_report.md`` hold the numbers.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from trainer.data.memory import eval_batches
from trainer.quant.qat import (
    QATModel,
    _x86_quantizer,
    capture,
    quiet_annotation,
    require_torchao,
)

REPORT_KEYS = ("fp32_accuracy", "int8_accuracy", "fp32_size_bytes", "int8_size_bytes",
               "fp32_latency_ms", "int8_latency_ms", "agreement")


def strip_unused(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Drop attributes the graph no longer reads (convert_pt2e leaves the float weights next
    to their int8 copies; saved, they would make the int8 file larger than the float one)."""
    used = {n.target for n in graph.graph.nodes if n.op == "get_attr"}
    for name in [*dict(graph.named_parameters()), *dict(graph.named_buffers())]:
        if name not in used:
            owner, _, leaf = name.rpartition(".")
            delattr(graph.get_submodule(owner) if owner else graph, leaf)
    return graph


def convert_qat(model: QATModel) -> torch.fx.GraphModule:
    """The int8 model of a trained QAT model (which is left as it was)."""
    from torchao.quantization.pt2e import disable_observer, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    graph = copy.deepcopy(model.graph)
    graph.apply(disable_observer)
    move_exported_model_to_eval(graph)
    return strip_unused(convert_pt2e(graph))


def post_training_quantize(model: nn.Module, example: torch.Tensor,
                           calibration) -> torch.fx.GraphModule:
    """The int8 model of a float model, its activation ranges observed on ``calibration``."""
    require_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    with quiet_annotation():
        prepared = prepare_pt2e(capture(model.eval(), example), _x86_quantizer(is_qat=False))
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    return strip_unused(convert_pt2e(prepared))


def lower(graph: torch.fx.GraphModule, example: torch.Tensor) -> torch.fx.GraphModule:
    """The int8 graph on oneDNN's int8 kernels, for one fixed batch shape."""
    from torchao.quantization.pt2e.lowering import lower_pt2e_quantized_to_x86

    lowered = lower_pt2e_quantized_to_x86(copy.deepcopy(graph), (example,))
    # oneDNN's convolutions return channels-last tensors, which the graph's view (from a
    # flatten) cannot reshape without a copy.
    for node in lowered.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.view.default:
            node.target = torch.ops.aten.reshape.default
    lowered.recompile()
    return lowered


def save_program(module: nn.Module, example: torch.Tensor, path: Path) -> int:
    """Save ``module`` as a torch.export program (batch size free); its size in bytes."""
    dynamic = ({0: torch.export.Dim.DYNAMIC},)
    torch.export.save(torch.export.export(module, (example,), dynamic_shapes=dynamic), path)
    return path.stat().st_size


@torch.no_grad()
def latency_ms(module: nn.Module, batch: torch.Tensor, repeats: int) -> float:
    module(batch)  # warm-up: first-call allocations, oneDNN primitive creation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        module(batch)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@torch.no_grad()
def predictions(module: nn.Module, split, transform, task,
                batch_size: int) -> tuple[torch.Tensor, float]:
    """Predicted classes on a whole split, and the accuracy."""
    predicted, correct = [], 0
    for raw, targets in eval_batches(split, batch_size):  # (images: (inputs, targets) pairs)
        p = task.predict(module(transform(raw)))
        predicted.append(p)
        correct += int((p == targets).sum())
    return torch.cat(predicted), correct / max(len(split), 1)


def quantize_and_report(float_model: nn.Module, *, data, task, out_dir: Path, quant_cfg,
                        qat_model: QATModel | None = None) -> dict:
    """Convert (QAT) or post-training quantize (PTQ), measure both models, write the report.

    ``float_model``: the float network with the trained weights (for QAT, the same weights
    as ``qat_model``'s). PTQ when ``qat_model`` is None.
    """
    require_torchao()
    out_dir.mkdir(parents=True, exist_ok=True)
    float_model = float_model.cpu().eval()
    n = min(quant_cfg.latency_batch_size, len(data.test))
    test = data.test.to(torch.device("cpu"))
    batch = data.transform(next(test.stream([slice(0, n)]))[0])
    example = batch[:2].clone()  # a view would save the whole batch with the program
    if qat_model is not None:
        qat_model = qat_model.cpu()
        int8 = convert_qat(qat_model)
        reference = copy.deepcopy(qat_model).eval()  # the fake-quant model it came from
    else:
        cal = [data.transform(x) for x, _ in data.train.to(torch.device("cpu")).stream(
            [slice(i * n, (i + 1) * n) for i in range(quant_cfg.calibration_batches)
             if i * n < len(data.train)])]
        int8 = post_training_quantize(copy.deepcopy(float_model), example, cal)
        reference = float_model

    measure = (test, data.transform, task, quant_cfg.eval_batch_size)
    fp32_pred, fp32_acc = predictions(float_model, *measure)
    int8_pred, int8_acc = predictions(int8, *measure)
    ref_pred, ref_acc = ((fp32_pred, fp32_acc) if qat_model is None
                         else predictions(reference, *measure))
    report = {
        "mode": "qat" if qat_model is not None else "ptq",
        "fp32_accuracy": fp32_acc,
        "int8_accuracy": int8_acc,
        "fake_quant_accuracy": ref_acc if qat_model is not None else None,
        "fp32_size_bytes": save_program(float_model, example, out_dir / "model_fp32.pt2"),
        "int8_size_bytes": save_program(int8, example, out_dir / "model_int8.pt2"),
        "fp32_latency_ms": latency_ms(float_model, batch, quant_cfg.latency_repeats),
        "int8_latency_ms": latency_ms(lower(int8, batch), batch, quant_cfg.latency_repeats),
        "latency_batch_size": n,
        "threads": torch.get_num_threads(),
        "agreement": float((int8_pred == ref_pred).float().mean()),
        "agreement_with_fp32": float((int8_pred == fp32_pred).float().mean()),
        "test_samples": len(test),
    }
    (out_dir / "quant_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "quant_report.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    fp32, int8 = report["fp32_size_bytes"], report["int8_size_bytes"]
    against = "fake-quant" if report["mode"] == "qat" else "fp32"
    rows = [
        "| model | test accuracy | size on disk | CPU latency per batch |",
        "|---|---|---|---|",
        f"| fp32 | {report['fp32_accuracy']:.2%} | {fp32:,} B | "
        f"{report['fp32_latency_ms']:.2f} ms |",
        f"| int8 ({report['mode'].upper()}) | {report['int8_accuracy']:.2%} | {int8:,} B "
        f"({int8 / fp32:.0%}) | {report['int8_latency_ms']:.2f} ms |",
    ]
    if report.get("fake_quant_accuracy") is not None:
        rows.append(f"| fake-quant (training graph) | {report['fake_quant_accuracy']:.2%} | | |")
    return (
        f"# Quantization report ({report['mode'].upper()})\n\n" + "\n".join(rows) + "\n\n"
        f"int8 predictions agree with the {against} model on {report['agreement']:.2%} of "
        f"{report['test_samples']:,} test samples (with fp32: "
        f"{report['agreement_with_fp32']:.2%}). Latency: median of repeats, batch "
        f"{report['latency_batch_size']}, {report['threads']} threads; fp32 in eager PyTorch, "
        "int8 lowered to oneDNN int8 kernels.\n"
    )


def float_twin(cfg, qat_model: QATModel, model_kwargs: dict) -> nn.Module:
    """The configured float network holding a QAT model's trained weights."""
    from trainer.engine.build import build_model
    from trainer.parallel.backends.base import Backend

    model = build_model(cfg.model, Backend(torch.device("cpu")), **model_kwargs)
    model.load_state_dict(qat_model.float_state_dict())
    return model


def export_run(run) -> dict:
    """quant=qat|ptq at the end of training: the int8 model and the report in the run
    directory, the numbers in TensorBoard (primary rank only)."""
    model = run.model
    if isinstance(model, QATModel):
        report = quantize_and_report(
            float_twin(run.cfg, model, run.data.model_kwargs()), data=run.data,
            task=run.task, out_dir=run.run_dir, quant_cfg=run.cfg.quant, qat_model=model,
        )
    else:
        report = quantize_and_report(copy.deepcopy(model), data=run.data, task=run.task,
                                     out_dir=run.run_dir, quant_cfg=run.cfg.quant)
    run.logger.scalars({f"quant/{k}": report[k] for k in REPORT_KEYS}, run.progress.step)
    run.logger.info(
        f"int8 model ({report['mode'].upper()}): test accuracy {report['int8_accuracy']:.2%} "
        f"(fp32 {report['fp32_accuracy']:.2%}), {report['int8_size_bytes']:,} bytes "
        f"({report['int8_size_bytes'] / report['fp32_size_bytes']:.0%} of fp32), "
        f"{report['int8_latency_ms']:.2f} ms vs {report['fp32_latency_ms']:.2f} ms per batch "
        f"of {report['latency_batch_size']}; {run.run_dir / 'quant_report.md'}"
    )
    return report
