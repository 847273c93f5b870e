"""``_target_`` instantiation, and which classes a config may name.

Hydra's ``instantiate`` imports whatever a config names. Two kinds of config reach it:

- the run's own config (YAML files and the command line): written by the person who runs the
  command, who can run code anyway. Any importable class may be named (a model, data set,
  optimizer... of the user's own package); functions are refused (a config builds objects).
- a config read back from a checkpoint (``trainer-predict``, ``trainer-export``,
  ``trainer-generate`` rebuild the model from it): a checkpoint may come from anywhere, so it
  must not be able to run code. Before anything is built, :func:`check_stored_config` walks
  every ``_target_`` at every depth (lists included) and requires that

  1. the spelled path starts with a trusted package (nothing else is even imported: importing
     a module can run code);
  2. what it RESOLVES to is a class DEFINED in a trusted package (``__module__``): spelling a
     re-export such as ``trainer.backends.rendezvous.subprocess.Popen`` gets ``subprocess``;
  3. a class of torch or torchvision, which define process launchers of their own
     (``torch.distributed.elastic...SubprocessHandler``), is an ``nn.Module``, an optimizer,
     a learning-rate scheduler or a ``Dataset``.

  Trusted: trainer, recipes, torch, torchvision, and the packages the user names with
  ``--trust PKG`` or ``TRAINER_TRUSTED_PACKAGES=PKG[,PKG]`` (whose classes are then trusted
  whole: it is the user's own code).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Iterator
from typing import Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig

from trainer.errors import UserError

ALLOWED_PACKAGES = ("trainer", "recipes", "torch", "torchvision")
# Packages whose classes a checkpoint may name only when they are of these kinds.
_BROAD_PACKAGES = ("torch", "torchvision")
TRUST_VARIABLE = "TRAINER_TRUSTED_PACKAGES"


def _targets(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, DictConfig | dict):
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        for key, value in items:
            if key == "_target_":
                yield path, value
            else:
                yield from _targets(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig | list | tuple):
        for i, value in enumerate(node):
            yield from _targets(value, f"{path}[{i}]")


def _package(dotted: str) -> str:
    return dotted.split(".", 1)[0]


def check_target(target: Any, where: str) -> type:
    """Return the class ``target`` names (any importable class: the run's own config is the
    user's code), or raise UserError saying why it is refused."""
    if not isinstance(target, str) or not target:
        raise UserError(f"{where}._target_ must be a dotted class path, got {target!r}")
    return _resolve(target, where)


def _resolve(target: str, where: str) -> type:
    try:
        obj = get_object(target)
    except Exception as exc:
        raise UserError(f"{where}._target_={target} cannot be imported: {exc}") from None
    if not inspect.isclass(obj):
        raise UserError(
            f"{where}._target_={target} is refused: it is a {type(obj).__name__}, "
            "and only classes may be instantiated from a config"
        )
    return obj


def trusted_packages(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The built-in trusted packages, the environment's, and ``extra`` (``--trust``)."""
    named = [p.strip() for p in os.environ.get(TRUST_VARIABLE, "").split(",") if p.strip()]
    return (*ALLOWED_PACKAGES, *named, *[p for p in extra if p])


def _allowed_kinds() -> tuple[type, ...]:
    import torch
    from torch.utils.data import Dataset

    return (torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler,
            Dataset)


def check_stored_config(config: Any, source: str, trust: Iterable[str] = ()) -> None:
    """Refuse a checkpoint's stored config if any ``_target_`` in it is not trusted.

    ``source`` names the checkpoint in the message; ``trust``: packages the user trusts.
    """
    trusted = trusted_packages(trust)

    def how(package: str) -> str:
        return (f"if you trust {source}, add --trust {package} (or set "
                f"{TRUST_VARIABLE}={package})")

    for where, target in _targets(config, "config"):
        if not isinstance(target, str) or not target:
            raise UserError(f"{source}: {where}._target_ is not a dotted class path "
                            f"({target!r}); the checkpoint is not usable")
        if _package(target) not in trusted:
            raise UserError(
                f"{source}: {where}._target_={target} is not trusted (a checkpoint may only "
                f"build classes of {', '.join(trusted)}); {how(_package(target))}"
            )
        obj = _resolve(target, f"{source}: {where}")
        defined_in = getattr(obj, "__module__", "") or ""
        name = f"{defined_in}.{obj.__qualname__}"
        if _package(defined_in) not in trusted:
            raise UserError(
                f"{source}: {where}._target_={target} is refused: it is {name}, defined "
                f"outside the trusted packages ({', '.join(trusted)}); "
                f"{how(_package(defined_in))}"
            )
        user_named = _package(defined_in) not in ALLOWED_PACKAGES
        if (_package(defined_in) in _BROAD_PACKAGES and not user_named
                and not issubclass(obj, _allowed_kinds())):
            raise UserError(
                f"{source}: {where}._target_={target} is refused: it is {name}, not a model, "
                "optimizer, scheduler or data set class (the only torch/torchvision classes "
                "a checkpoint may build)"
            )


def safe_instantiate(node: DictConfig, where: str, exclude: tuple[str, ...] = (), **kwargs):
    """Instantiate ``node`` (minus the ``exclude`` keys) after checking every ``_target_``."""
    for path, target in _targets(node, where):
        check_target(target, path)
    params = {k: v for k, v in node.items_ex(resolve=True) if k not in exclude}
    try:
        return instantiate(params, _convert_="all", **kwargs)
    except Exception as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, UserError):
            raise cause from None
        raise
