"""``_target_`` instantiation restricted to classes of this project, torch and torchvision.

Hydra's ``instantiate`` imports whatever a config names, so a config file (or a command-line
override) could otherwise run arbitrary code. Every ``_target_`` in the node is checked before
anything is imported: its module must be one of the allowed packages, and what it names must
be a class.
"""

from __future__ import annotations

import inspect
from typing import Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig

from trainer.errors import UserError

ALLOWED_PACKAGES = ("trainer", "recipes", "torch", "torchvision")


def _targets(node: Any, path: str):
    if isinstance(node, DictConfig):
        for key, value in node.items_ex(resolve=False):
            if key == "_target_":
                yield path, value
            else:
                yield from _targets(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i, value in enumerate(node):
            yield from _targets(value, f"{path}[{i}]")


def check_target(target: Any, where: str) -> type:
    """Return the class ``target`` names, or raise UserError saying why it is refused."""
    if not isinstance(target, str) or not target:
        raise UserError(f"{where}._target_ must be a dotted class path, got {target!r}")
    package = target.split(".", 1)[0]
    if package not in ALLOWED_PACKAGES:
        raise UserError(
            f"{where}._target_={target} is refused: only classes from "
            f"{', '.join(ALLOWED_PACKAGES)} may be instantiated from a config"
        )
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
