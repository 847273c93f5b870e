"""trainer: Hydra-configured data-parallel training of PyTorch models.

``trainer.fit``, ``trainer.evaluate``, ``trainer.predict``, ``trainer.Callback``,
``trainer.ModelTransform``, ``trainer.LogOutput``, ``trainer.UserError`` and
``trainer.Preempted`` (what ``fit`` raises after checkpointing when SIGTERM, SIGUSR1 or Ctrl-C
stopped it) are the Python API; they load on first use, so that importing a submodule (the CLI,
Hydra's plugin scan) stays light.
"""

__version__ = "0.1.0"
__all__ = ["Callback", "LogOutput", "ModelTransform", "Preempted", "UserError", "evaluate",
           "fit", "predict"]


def __getattr__(name: str):
    if name in ("fit", "evaluate", "predict"):
        from trainer import api

        return getattr(api, name)
    if name == "Callback":
        from trainer.callbacks import Callback

        return Callback
    if name == "LogOutput":
        from trainer.io.outputs import LogOutput

        return LogOutput
    if name == "ModelTransform":
        from trainer.engine.transforms import ModelTransform

        return ModelTransform
    if name in ("UserError", "Preempted"):
        from trainer import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
