"""trainer: Hydra-configured data-parallel training of PyTorch models.

``trainer.fit``, ``trainer.Callback`` and ``trainer.UserError`` are the Python API; they load
on first use, so that importing a submodule (the CLI, Hydra's plugin scan) stays light.
"""

__version__ = "0.1.0"
__all__ = ["Callback", "UserError", "fit"]


def __getattr__(name: str):
    if name == "fit":
        from trainer.api import fit

        return fit
    if name == "Callback":
        from trainer.callbacks import Callback

        return Callback
    if name == "UserError":
        from trainer.errors import UserError

        return UserError
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
