"""Schemas made from a class's own signature, so that an option's defaults live in one place.

A built-in option (``optimizer=lamb``, ``schedule=cosine``, ``noise=annealed``) is typed by a
dataclass generated here from its ``_target_``'s ``__init__``: every argument with its default
and, where the annotation is a plain ``int``/``float``/``bool``/``str`` (or optional), its type.
The option's YAML then holds only ``_target_`` and the values it chooses differently from the
class, and ``trainer --cfg job`` still lists every key, so ``optimizer.betas=[0.9,0.99]`` needs
no ``+``. Only positional-or-keyword arguments are taken: torch's keyword-only switches
(``foreach``, ``maximize``, ``fused``, ...) stay out of the printed config, and a user may still
pass one with ``+optimizer.maximize=true`` (the signature check accepts it).
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import field, make_dataclass
from typing import Any, Union

from omegaconf import MISSING

_PLAIN = (int, float, bool, str)
# Arguments the framework passes itself, never a config key.
_PASSED_BY_THE_FRAMEWORK = {"self", "params"}


def _config_type(annotation: Any) -> Any:
    """The OmegaConf field type for an annotation: plain types; a union with one plain member
    (``Union[float, Tensor]``: a config can only give the float) as that type, optional where
    None is allowed; Any for everything else (sequences, callables)."""
    if annotation in _PLAIN:
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = typing.get_args(annotation)
        plain = [a for a in members if a in _PLAIN]
        if len(plain) == 1:
            return plain[0] | None if type(None) in members else plain[0]
    return Any


def _hints(function) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - an unresolvable annotation only costs the type check
        return {}


def _arguments(cls: type) -> list[inspect.Parameter]:
    """``cls``'s positional-or-keyword arguments, following ``**kwargs`` into the bases the
    way the framework's own classes forward them (the schedules' warmup keys)."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        hints = _hints(klass.__init__)
        for p in params:
            if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in _PASSED_BY_THE_FRAMEWORK:
                found.setdefault(p.name, p.replace(annotation=hints.get(p.name, Any)))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return list(found.values())


def _field(default: Any):
    if default is inspect.Parameter.empty:
        return field(default=MISSING)
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda d=default: list(d))
    return field(default=default)


def schema_from_signature(cls: type, base: type | None = None,
                          extra: dict[str, tuple[Any, Any]] | None = None) -> type:
    """A dataclass typing an option of ``cls``: ``_target_``, the fields of ``base`` (the
    framework's own keys of the group), ``extra`` keys ``{name: (type, default)}``, and one
    field per argument of ``cls`` with the class's default (MISSING where it has none)."""
    fields_ = [("_target_", str, field(default=MISSING))]
    for p in _arguments(cls):
        fields_.append((p.name, _config_type(p.annotation), _field(p.default)))
    for name, (type_, default) in (extra or {}).items():
        fields_.append((name, type_, _field(default)))
    return make_dataclass(f"{cls.__name__}Options", fields_, bases=(base,) if base else ())
