"""What a checkpoint may hold, so that every checkpoint loads back.

Checkpoints are read with ``torch.load(weights_only=True)``: a file cannot run code, and an
object the safe loader cannot rebuild makes the whole file unreadable, which used to surface
only at the resume (and so a run that saved a numpy scalar in a callback's state started over).
So every state is checked when it is saved (and the callbacks' before the first step), against
exactly what loads back:

- plain values: None, bools, numbers, strings, bytes; tensors, torch dtypes, devices, sizes;
- containers of them: dict (OrderedDict, Counter), list, tuple, set;
- values a user commonly keeps, loaded back as themselves: numpy scalars and arrays (not of
  Python objects), ``pathlib`` paths, ``datetime``'s dates, times and durations, ``Decimal``
  (the safe loader is allowed exactly these classes: :func:`safe_globals`); ``deque``,
  ``defaultdict`` (of a built-in factory) and ``frozenset``, which the safe loader cannot
  rebuild, are saved as a tagged dict and rebuilt on load.

Anything else (an object of the user's own class, a lambda, a lock, a namedtuple, an enum) is
refused at once, in one line naming the component and the key, before anything is written.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import pathlib
from typing import Any

import numpy as np
import torch

from trainer.compat import numpy_pickle_globals
from trainer.errors import UserError

_TAG = "__trainer_state_type__"
_FACTORIES = {t.__name__: t for t in (list, dict, set, int, float, str, tuple)}
_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.dtype,
          torch.device, torch.Size)
_ALLOWED = (pathlib.PurePosixPath, pathlib.PureWindowsPath, datetime.date, datetime.time,
            datetime.timedelta, datetime.timezone, decimal.Decimal)
_DICTS = (dict, collections.OrderedDict, collections.Counter)


def safe_globals() -> list[Any]:
    """The classes the safe loader may rebuild beyond its own: those of :data:`_ALLOWED` (each
    concrete one) and numpy's."""
    return [pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath,
            pathlib.PureWindowsPath, datetime.datetime, datetime.date, datetime.time,
            datetime.timedelta, datetime.timezone, decimal.Decimal, *numpy_pickle_globals()]


def encode(value: Any, where: str) -> Any:
    """``value`` as a checkpoint holds it: the same object where it loads back as it is, the
    types the safe loader cannot rebuild tagged; UserError naming ``where`` and the key of
    anything that cannot be saved."""
    return _encode(value, where)[0]


def _encode(value: Any, where: str) -> tuple[Any, bool]:
    kind = type(value)
    if kind in _PLAIN or isinstance(value, torch.Tensor):
        return value, False
    if isinstance(value, np.generic | np.ndarray):
        if value.dtype.kind == "O":
            _refuse(where, "a numpy array of Python objects")
        return value, False
    if isinstance(value, _ALLOWED):
        return value, False
    if kind in _DICTS:
        items = [(_encode(k, f"{where}[{k!r}]"), _encode(v, f"{where}.{k}" if isinstance(k, str)
                                                         else f"{where}[{k!r}]"))
                 for k, v in value.items()]
        if not any(k[1] or v[1] for k, v in items):
            return value, False
        return kind((k[0], v[0]) for k, v in items), True
    if kind in (list, tuple, set):
        items = [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if not any(changed for _, changed in items):
            return value, False
        return kind(v for v, _ in items), True
    if kind is collections.deque:
        return {_TAG: "deque", "items": [_encode(v, f"{where}[{i}]")[0]
                                         for i, v in enumerate(value)],
                "maxlen": value.maxlen}, True
    if kind is frozenset:
        return {_TAG: "frozenset", "items": [_encode(v, f"{where}[{i}]")[0]
                                             for i, v in enumerate(value)]}, True
    if kind is collections.defaultdict:
        factory = value.default_factory
        if factory is not None and factory not in _FACTORIES.values():
            _refuse(where, f"a defaultdict whose default factory is {factory!r}")
        return {_TAG: "defaultdict", "factory": factory.__name__ if factory else None,
                "items": _encode(dict(value), where)[0]}, True
    _refuse(where, _what(value))
    raise AssertionError  # (unreachable: _refuse raises)


def decode(value: Any) -> Any:
    """A loaded checkpoint's values with the tagged ones rebuilt (in place where it can)."""
    if type(value) in _DICTS:
        if value.get(_TAG) is not None and type(value) is dict:
            return _rebuild(value)
        for key, item in value.items():
            new = decode(item)
            if new is not item:
                value[key] = new
        return value
    if type(value) is list:
        for i, item in enumerate(value):
            new = decode(item)
            if new is not item:
                value[i] = new
        return value
    return value


def _rebuild(tagged: dict) -> Any:
    kind = tagged[_TAG]
    if kind == "deque":
        return collections.deque(decode(tagged["items"]), maxlen=tagged["maxlen"])
    if kind == "frozenset":
        return frozenset(decode(tagged["items"]))
    if kind == "defaultdict":
        factory = _FACTORIES.get(tagged["factory"]) if tagged["factory"] else None
        return collections.defaultdict(factory, decode(tagged["items"]))
    return tagged  # (a tag this version does not know: left as the dict it is)


def _what(value: Any) -> str:
    kind = type(value)
    if callable(value) and getattr(value, "__name__", "") == "<lambda>":
        return "a lambda"
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return f"a namedtuple ({kind.__qualname__})"
    return f"a {kind.__module__}.{kind.__qualname__}"


def _refuse(where: str, what: str) -> None:
    raise UserError(
        f"{where} is {what}, which a checkpoint cannot load back safely; keep plain values in "
        "state_dict() (numbers, strings, lists, dicts, tensors, numpy values, paths, dates), "
        "for example a dict of its fields, or str() of it"
    )
