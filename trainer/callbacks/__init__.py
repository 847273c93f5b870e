"""Callbacks: code of a recipe's or a user's that runs at fixed points of a run.

A callback subclasses :class:`Callback` and overrides the hooks it needs; each hook gets the
:class:`~trainer.engine.build.Run` (``run.rank``, ``run.is_primary``, ``run.step``, the model, the
optimizer, the logger...) and, where there are any, the metrics just computed. Callbacks run on
EVERY rank, in the order the config lists them: work for rank 0 only (writing a file) checks
``run.is_primary``; anything that changes training (stopping, changing the model) must happen
alike on every rank, from values every rank has (the metrics are already reduced over workers).

Configured by name, so recipes and users add or remove them without touching the others::

    callbacks:
      best_accuracy: {_target_: mypkg.callbacks.PrintBest, metric: eval/accuracy}

``trainer callbacks.best_accuracy=null`` removes one; from Python,
``trainer.fit(..., callbacks=[PrintBest()])`` adds instances.

A callback that keeps state across a resume defines ``state_dict()`` / ``load_state_dict()``;
its state is saved in every checkpoint under its name (``trainer.fit``'s instances: their
class's qualified name).
"""

from __future__ import annotations

from typing import Any

from trainer.errors import UserError, add_context


class Callback:
    """No-op hooks; override the ones you need."""

    def on_fit_start(self, run) -> None:
        """The run is built and restored (``run.step`` > 0 when resumed); before the first step."""

    def on_epoch_start(self, run) -> None:
        """Before the first step of each epoch (and of the resumed epoch, mid-way)."""

    def on_step_start(self, run) -> None:
        """Before each optimizer step (``run.step`` steps done). Keep it cheap."""

    def on_after_backward(self, run) -> None:
        """After the step's last backward, inside the backend's step context: the gradients
        (``p.grad``) are averaged over workers and final, not yet unscaled (fp16 gradients
        still carry ``run.precision.loss_scale()``). For reading them (measurements); runs
        every step, so keep it on the device (no ``.item()``)."""

    def on_before_optimizer_step(self, run, optimizer) -> None:
        """Right before ``optimizer.step()``: the averaged gradients at their true size (a
        loss scaler has unscaled them); change them in place here (clipping, noise). Every
        worker holds the same gradient, so the same change on each keeps the replicas equal.
        A step whose fp16 gradients overflowed is still skipped by the scaler after this."""

    def on_step_end(self, run) -> None:
        """After each optimizer step. Keep it cheap: it runs every step, and the step's loss is
        still on the device (reading it would stall the pipeline); see ``on_log``."""

    def on_log(self, run, metrics: dict[str, float]) -> None:
        """Every ``trainer.log_every`` steps, with the training loss / lr / samples per second
        of the steps since the last log line (averaged over workers). Log values of your own
        with ``run.logger.scalars(values, run.step)``; ``run.logger.note(text)`` appends a
        short text to this log line on the console."""

    def on_eval_end(self, run, metrics: dict[str, float]) -> None:
        """After each evaluation, with its metrics (``eval/loss``, ``eval/accuracy``...)."""

    def on_checkpoint(self, run, path) -> None:
        """After a checkpoint was written (``path``, the file rank 0 wrote, on every rank)."""

    def on_fit_end(self, run, metrics: dict[str, Any]) -> None:
        """At the end, with the run's final metrics (what ``trainer.fit`` returns); entries a
        callback adds go into metrics.json too."""


HOOKS = ("on_fit_start", "on_epoch_start", "on_step_start", "on_after_backward",
         "on_before_optimizer_step", "on_step_end", "on_log", "on_eval_end", "on_checkpoint",
         "on_fit_end")


class CallbackList:
    """The run's callbacks by name, called in order; also their saved state.

    ``callbacks.on_eval_end(run, metrics)`` calls every callback's hook of that name. Only
    callbacks that override a hook are called for it: the per-step hooks then cost one empty
    loop when no callback uses them."""

    def __init__(self, named: dict[str, Callback], formerly: dict[str, str] | None = None) -> None:
        self.named = dict(named)
        self.formerly = formerly or {}  # name -> the key an older checkpoint saved it under
        for hook in HOOKS:
            hooked = [(f"{name}.{hook}", getattr(cb, hook)) for name, cb in self.named.items()
                      if getattr(type(cb), hook, None) is not getattr(Callback, hook)]
            setattr(self, hook, self._caller(hooked))

    @staticmethod
    def _caller(hooked: list):
        def call(*args: Any) -> None:
            for name, hook in hooked:
                try:
                    hook(*args)
                except UserError:
                    raise
                except Exception as exc:  # the callback's own error: say whose hook it was
                    add_context(exc, f"in the callback {name}")
                    raise

        return call

    def __len__(self) -> int:
        return len(self.named)

    def state_dict(self) -> dict[str, Any]:
        return {name: cb.state_dict() for name, cb in self.named.items()
                if hasattr(cb, "state_dict")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, cb in self.named.items():
            key = name if name in state else self.formerly.get(name)
            if key in state and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(state[key])


__all__ = ["Callback", "CallbackList", "HOOKS"]
