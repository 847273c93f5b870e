"""Mixed precision: autocast for the forward pass and, for fp16, a gradient scaler.

``trainer.precision``: ``32`` (plain fp32), ``bf16`` (bfloat16 autocast, on GPUs and on the
CPU; no scaler needed, its exponent range is fp32's) or ``16`` (float16 autocast on the GPU
with a dynamic loss scaler, whose state is checkpointed so a resumed run scales the same).
"""

from __future__ import annotations

import contextlib

import torch

from trainer.compat import loss_scale_tensor
from trainer.errors import UserError

MODES = ("32", "bf16", "16")


class Precision:
    def __init__(self, mode: str, device: torch.device) -> None:
        mode = str(mode)
        if mode not in MODES:
            raise UserError(f"trainer.precision={mode} is unknown; use one of: {', '.join(MODES)}")
        if mode == "16" and device.type != "cuda":
            raise UserError(
                "trainer.precision=16 needs a CUDA device (fp16 with a loss scaler); use "
                "trainer.precision=bf16 on the CPU"
            )
        self.mode = mode
        self.device_type = device.type
        self.dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(mode)
        self.scaler = torch.amp.GradScaler(device.type) if mode == "16" else None
        self._unscaled = False  # this step's gradients are unscaled already

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring scaled fp16 gradients back to their true size before anything reads them
        (once a step, however many readers: clipping, gradient noise)."""
        if self.scaler is not None and not self._unscaled:
            self.scaler.unscale_(optimizer)
            self._unscaled = True

    def loss_scale(self) -> torch.Tensor | float:
        """The factor the gradients carry until unscaled (1 without a scaler)."""
        if self.scaler is None:
            return 1.0
        # The scaler's own device tensor: get_scale() would synchronise the host every step.
        return loss_scale_tensor(self.scaler)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            self.scaler.update()
            self._unscaled = False

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
