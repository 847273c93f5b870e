"""Quantization-aware training (``quant=qat``) through torchao's PT2E flow.

The float model is captured with ``torch.export`` (batch dimension dynamic), then
``prepare_qat_pt2e`` with the X86 Inductor quantizer inserts fake-quantize modules: int8
per-channel symmetric weights and uint8 per-tensor affine activations, with moving-average
min/max observers and a straight-through estimator for the rounding (Jacob et al. 2018;
Krishnamoorthi 2018). The result ends in a real int8 model (``trainer/quant/export.py``).

Why PT2E for every model and not torchao's ``quantize_(model, QATConfig(...))``: QATConfig's
base configs (int8 dynamic activations with int4/intx weights, float8) fake-quantize
activations per token at run time, so they have no observers to freeze or synchronise and no
conv support; the issue's schedule (observers frozen at one step, BatchNorm at another) and
the conv nets need static activation ranges, which is what PT2E gives, for Linear models as
well. ``torch.ao.quantization``'s eager QAT is deprecated and is not used.

The schedule, a pure function of the step (so a resume re-applies it exactly):

- before ``start_step``: fake quantization and observers off (the graph computes in float);
- from ``start_step``: fake quantization and observers on;
- from ``freeze_observer_step``: observers off, the ranges (scale, zero point) fixed;
- from ``freeze_bn_step``: BatchNorm uses and keeps its running statistics.

Observers and fake-quantize settings are buffers of the graph, so they are in every
checkpoint. Under data parallelism each worker's activation observers see only its own shard;
after every step that observes, the workers average their observers' min/max and recompute
the scales, so the replicas hold identical quantization parameters at every step.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from trainer.errors import UserError

# Layers with weights that the X86 PT2E quantizer turns into int8 kernels (BatchNorm is
# folded or kept in float next to them). Parameter-free layers (ReLU, pooling, dropout,
# flatten) pass through.
SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)


def check_quantizable(model: nn.Module) -> None:
    """Refuse, naming it, the first layer with weights that int8 export cannot handle."""
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if own and (type(module) not in SUPPORTED):
            raise UserError(
                f"quant: layer '{name}' ({type(module).__name__}) cannot be quantized to int8 "
                "by the X86 PT2E flow, which covers Linear, Conv1d/Conv2d and BatchNorm; "
                "train this model with quant=none"
            )


def _x86_quantizer(is_qat: bool):
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    return X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config(is_qat=is_qat)
    )


@contextlib.contextmanager
def quiet_annotation():
    """The X86 quantizer warns for every op it leaves in float (a max-pool after a float
    BatchNorm): expected here, and the report measures the outcome."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not quantized, skip annotate.*")
        yield


def capture(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """``model`` as an aten-level graph whose batch size may vary."""
    dynamic = ({0: torch.export.Dim.DYNAMIC},)
    return torch.export.export(model, (example,), dynamic_shapes=dynamic).module()


def example_batch(data) -> torch.Tensor:
    """Two training samples as model input: what the graph is captured with (its shapes; the
    test split is read once, at the end)."""
    return data.transform(next(data.train.stream([slice(0, 2)]))[0])


def require_torchao() -> None:
    # torchao registers a pytree constant on import, which torch 2.14 answers with a
    # deprecation line on every run; it says nothing to our users.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    try:
        import torchao  # noqa: F401
    except ImportError:
        raise UserError(
            "quantization needs torchao: pip install torchao==0.18.0 (the version trainer's "
            "qat extra pins; from a checkout: pip install -e '.[qat]')"
        ) from None


def fake_quantizers(graph: nn.Module) -> list[nn.Module]:
    from torchao.quantization.pt2e import FakeQuantizeBase

    return [m for m in graph.modules() if isinstance(m, FakeQuantizeBase)]


@dataclass(frozen=True)
class Phase:
    fake_quant: bool
    observe: bool
    bn_frozen: bool

    def describe(self) -> str:
        if not self.fake_quant:
            return "float"
        return ("fake-quant, observers " + ("on" if self.observe else "frozen")
                + (", BatchNorm frozen" if self.bn_frozen else ""))


@dataclass(frozen=True)
class QATSchedule:
    """When each part of QAT switches on or off, in optimizer steps."""

    start_step: int = 0
    freeze_observer_step: int | None = None
    freeze_bn_step: int | None = None

    def __post_init__(self) -> None:
        if self.start_step < 0:
            raise UserError(f"quant.start_step={self.start_step} must be >= 0")
        for key in ("freeze_observer_step", "freeze_bn_step"):
            value = getattr(self, key)
            if value is not None and value < self.start_step:
                raise UserError(
                    f"quant.{key}={value} comes before quant.start_step={self.start_step}; "
                    "freeze at or after the start of QAT, or use null (never)"
                )

    def phase(self, step: int) -> Phase:
        on = step >= self.start_step
        observe = on and (self.freeze_observer_step is None or step < self.freeze_observer_step)
        bn = self.freeze_bn_step is not None and step >= self.freeze_bn_step
        return Phase(on, observe, bn)


class QATModel(nn.Module):
    """The fake-quantized graph of a float model, trained like any module.

    ``train()``/``eval()`` rewrite the graph's dropout and BatchNorm ops (an exported graph has
    no modes of its own); with BatchNorm frozen, training keeps it in its inference form.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        require_torchao()
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

        check_quantizable(model)
        model.train()
        with quiet_annotation():
            self.graph = prepare_qat_pt2e(capture(model, example), _x86_quantizer(is_qat=True))
        self.phase = Phase(fake_quant=True, observe=True, bn_frozen=False)
        self.set_phase(Phase(fake_quant=False, observe=False, bn_frozen=False))
        # The fused fake-quant op sizes per-channel scales on its first call, observer on or
        # off, without initialising them: one eval-mode call now, then defined values, so
        # that checkpoints (and the replicas' comparison) never hold uninitialised memory.
        with torch.no_grad():
            self.train(False)
            self.graph(example)
            self.train(True)
            for quantizer in fake_quantizers(self.graph):
                quantizer.scale.fill_(1.0)
                quantizer.zero_point.zero_()
            for counter in self._counters():
                counter.zero_()

    def _counters(self) -> list[torch.Tensor]:
        return [b for name, b in self.graph.named_buffers()
                if name.endswith("num_batches_tracked")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.graph(x)
        # The exported graph counts BatchNorm batches outside the op that eval mode swaps,
        # so evaluation would count too; keep the count a training count.
        counts = [c.clone() for c in self._counters()]
        out = self.graph(x)
        for counter, count in zip(self._counters(), counts, strict=True):
            counter.copy_(count)
        return out

    def train(self, mode: bool = True) -> QATModel:
        from torchao.quantization.pt2e import (
            disable_observer,
            enable_observer,
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )

        # Private in torchao (hence the exact pin): the only way to keep BatchNorm in its
        # inference form inside a training graph.
        from torchao.quantization.pt2e.export_utils import _replace_batchnorm

        self.training = mode
        # The rewrites trace their patterns on random example tensors: without a fork of the
        # RNG, every evaluation would shift the dropout masks of all later steps (and a
        # resumed run, whose last evaluation came before its checkpoint, would not be exact).
        with torch.random.fork_rng(devices=[]):
            if mode:
                move_exported_model_to_train(self.graph)
                if self.phase.bn_frozen:
                    _replace_batchnorm(self.graph, train_to_eval=True)
            else:
                move_exported_model_to_eval(self.graph)
        # Observers learn from training batches only: an evaluation must not move the ranges
        # (nor make a run that evaluates more often quantize differently).
        self.graph.apply(enable_observer if mode and self.phase.observe else disable_observer)
        return self

    def set_phase(self, phase: Phase) -> None:
        """Switch fake quantization, observers and BatchNorm statistics on or off."""
        from torchao.quantization.pt2e import disable_fake_quant, enable_fake_quant

        if phase == self.phase:
            return
        self.graph.apply(enable_fake_quant if phase.fake_quant else disable_fake_quant)
        self.phase = phase
        self.train(self.training)  # observers follow the phase and the mode

    @torch.no_grad()
    def sync_observers(self, backend) -> None:
        """Average every observer's min/max over the workers; recompute scales from them."""
        quantizers = [q for q in fake_quantizers(self.graph)
                      if hasattr(q.activation_post_process, "min_val")]
        observers = [q.activation_post_process for q in quantizers]
        flat = torch.cat([t.reshape(-1) for o in observers for t in (o.min_val, o.max_val)])
        flat = backend.all_reduce_sum(flat) / backend.world_size
        offset = 0
        for o in observers:
            for t in (o.min_val, o.max_val):
                t.copy_(flat[offset: offset + t.numel()].view_as(t))
                offset += t.numel()
        for q in quantizers:
            scale, zero_point = q.calculate_qparams()
            q.scale.resize_(scale.shape).copy_(scale)
            q.zero_point.resize_(zero_point.shape).copy_(zero_point)

    def replicated_buffers(self) -> list[torch.Tensor]:
        """Quantization state every data-parallel replica must hold identically."""
        return [b for q in fake_quantizers(self.graph) for b in q.buffers()
                if b.is_floating_point()]

    def float_state_dict(self) -> dict[str, torch.Tensor]:
        """The float model's weights and statistics, without the quantization state."""
        return {k: v for k, v in self.graph.state_dict().items()
                if not k.startswith("activation_post_process")}
