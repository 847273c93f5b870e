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
  2. what it RESOLVES to is a class DEFINED in a trusted package (``__module__``): spelling
     a re-export such as ``trainer.parallel.backends.rendezvous.subprocess.Popen`` gets
     ``subprocess``;
  3. a class of torch or torchvision, which define process launchers of their own
     (``torch.distributed.elastic...SubprocessHandler``), is an ``nn.Module``, an optimizer,
     a learning-rate scheduler or a ``Dataset``.

  Trusted: trainer, trainer_recipes, torch, torchvision, and the packages the user names with
  ``--trust PKG`` or ``TRAINER_TRUSTED_PACKAGES=PKG[,PKG]`` (whose classes are then trusted
  whole: it is the user's own code).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterable, Iterator
from difflib import get_close_matches
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from trainer.compat import locate
from trainer.errors import UserError, add_context

ALLOWED_PACKAGES = ("trainer", "trainer_recipes", "torch", "torchvision")
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
        obj = locate(target)  # get_object's lookup, without its ERROR log line
    except Exception as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise UserError(f"{where}._target_={target} cannot be imported ({detail}); check the "
                        "spelling, and that its package is installed or on PYTHONPATH") from None
    if not inspect.isclass(obj):
        raise UserError(
            f"{where}._target_={target} is refused: it is a {type(obj).__name__}, "
            "and only classes may be instantiated from a config"
        )
    return obj


# Keys Hydra's instantiate reads itself; never constructor arguments.
_HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


def _target_nodes(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    """Every node with a ``_target_`` at any depth of ``node`` (lists included)."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key, value in node.items_ex(resolve=False):
            yield from _target_nodes(value, f"{path}.{key}")
    elif isinstance(node, ListConfig):
        for i, value in enumerate(node):
            yield from _target_nodes(value, f"{path}[{i}]")


def accepted_arguments(cls: type) -> set[str] | None:
    """The keyword arguments ``cls(...)`` takes; None when any is accepted (``**kwargs`` or no
    readable signature). The framework's own classes forward ``**kwargs`` to their base class
    (the schedules' warmup keys), so for them the bases' arguments are followed instead."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        try:
            params = inspect.signature(klass.__init__).parameters.values()
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names - {"self"}
        if _package(klass.__module__ or "") != "trainer":
            return None
    return names - {"self"}


def check_arguments(node: DictConfig, where: str, framework: tuple[str, ...] = ()) -> None:
    """Refuse, in one line, a key that the class a ``_target_`` names does not take, at every
    depth of ``node``; ``framework``: keys of ``node`` itself that the framework consumes.

    This is what makes a misspelt key in an option WITHOUT a schema (a user's model or data
    set) fail at start rather than as a TypeError after the workers are up."""
    for path, sub in _target_nodes(node, where):
        cls = check_target(sub._target_, path)
        accepted = accepted_arguments(cls)
        if accepted is None:
            continue
        own = framework if sub is node else ()
        for key in sub.keys():
            if key in _HYDRA_KEYS or key in own or key in accepted:
                continue
            raise UserError(not_an_argument(f"{path}.{key}", sub._target_, accepted, own))


def not_an_argument(key: str, target: str, accepted: set[str], own: tuple[str, ...] = ()) -> str:
    """The line for a key the ``_target_``'s class does not take: the nearest name it does
    take when there is one, else every name it takes."""
    where, _, name = key.rpartition(".")
    takes = ", ".join(sorted(accepted - {"params"})) or "no arguments"
    close = get_close_matches(name, sorted({*accepted, *own} - {"params"}), n=1)
    if close:
        return (f"{key} is not an argument of {target}; did you mean {where}.{close[0]}? "
                f"(it takes: {takes})")
    extra = f"; the framework's own keys here: {', '.join(own)}" if own else ""
    return (f"{key} is not an argument of {target} (it takes: {takes}{extra}); fix or remove "
            "the key in the option's YAML or on the command line")


def trusted_packages(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The built-in trusted packages, the environment's, and ``extra`` (``--trust``)."""
    named = [p.strip() for p in os.environ.get(TRUST_VARIABLE, "").split(",") if p.strip()]
    return (*ALLOWED_PACKAGES, *named, *[p for p in extra if p])


def _allowed_kinds() -> tuple[type, ...]:
    import torch
    from torch.utils.data import Dataset

    return (torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler,
            Dataset)


# Modules renamed since checkpoints were first written: ``recipes`` became ``trainer_recipes``,
# and the framework's flat modules moved into folders by concern.
_RENAMED = {"recipes.": "trainer_recipes.",
            "trainer.schedule.": "trainer.optim.schedule.",
            "trainer.grad_noise.": "trainer.large_batch.grad_noise."}


# Keys that were the loop's and are now callbacks' arguments: (old key, callback, argument).
_LOOP_TO_CALLBACKS = (
    ("early_stop_metric", "best_checkpoint", "monitor"),
    ("early_stop_mode", "best_checkpoint", "mode"),
    ("early_stop", "early_stopping", "patience"),
    ("early_stop_metric", "early_stopping", "monitor"),
    ("early_stop_mode", "early_stopping", "mode"),
    ("early_stop_min_delta", "early_stopping", "min_delta"),
    ("profile_wait", "profiler", "wait"),
    ("profile_warmup", "profiler", "warmup"),
    ("profile_active", "profiler", "active"),
    ("profile_all_ranks", "profiler", "all_ranks"),
)
_CALLBACK_CLASSES = {"best_checkpoint": "trainer.callbacks.best_checkpoint.BestCheckpoint",
                     "early_stopping": "trainer.callbacks.early_stopping.EarlyStopping",
                     "profiler": "trainer.callbacks.profiler.Profiler"}


def upgrade_stored_config(config: Any) -> Any:
    """A checkpoint's stored config in this version's keys: renamed packages' ``_target_``
    paths updated (the trust check then runs on the new names), and the loop's former early
    stopping, best-checkpoint and profiler keys as the ``callbacks:`` entries they became
    (trainer.config.schema.MOVED), and ``data.val_fraction: 0`` where it has none (a run from
    before validation splits trained on every training row, and a resume keeps them) with its
    monitors' ``eval/<name>`` as ``val/<name>``; every other value unchanged."""
    if isinstance(config, dict) and isinstance(config.get("trainer"), dict) and any(
            old in config["trainer"] for old, _, _ in _LOOP_TO_CALLBACKS):
        config = _loop_keys_to_callbacks(config)
    if isinstance(config, dict) and isinstance(config.get("data"), dict) \
            and "val_fraction" not in config["data"]:
        config = {**config, "data": {**config["data"], "val_fraction": 0.0}}
        # Its monitors' eval/<name> (the test split's) are today's val/<name>.
        if isinstance(config.get("callbacks"), dict):
            config = {**config, "callbacks": {
                name: ({**entry, "monitor": "val/" + entry["monitor"][5:]}
                       if isinstance(entry, dict) and str(entry.get("monitor", "")).startswith(
                           "eval/") else entry)
                for name, entry in config["callbacks"].items()}}
    return _renamed_targets(config)


def _loop_keys_to_callbacks(config: dict) -> dict:
    loop = dict(config["trainer"])
    wanted = {"best_checkpoint": True, "early_stopping": bool(loop.get("early_stop")),
              "profiler": bool(loop.get("profile"))}
    callbacks = dict(config.get("callbacks") or {})
    for old, name, argument in _LOOP_TO_CALLBACKS:
        if wanted[name] and old in loop and name not in (config.get("callbacks") or {}):
            entry = callbacks.setdefault(name, {"_target_": _CALLBACK_CLASSES[name]})
            entry[argument] = loop[old]
    for old in ("early_stop", "profile", *(old for old, _, _ in _LOOP_TO_CALLBACKS)):
        loop.pop(old, None)
    return {**config, "trainer": loop, "callbacks": callbacks}


def _renamed_targets(config: Any) -> Any:
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if key == "_target_" and isinstance(value, str):
                for old, new in _RENAMED.items():
                    if value.startswith(old):
                        value = new + value[len(old):]
            out[key] = _renamed_targets(value)
        return out
    if isinstance(config, list):
        return [_renamed_targets(v) for v in config]
    return config


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
        refused = refused_arguments(cause, where, params.get("_target_", where))
        if refused is not None:
            raise refused from None
        if cause is not exc:  # the class's own error, out of Hydra's wrapper: its frames
            add_context(cause, f"building {where} ({params.get('_target_', where)})")
            raise cause from None
        raise


def refused_arguments(error: BaseException, where: str, target: str) -> UserError | None:
    """A constructor's refusal as one line: a ValueError is how a class says an argument is
    bad (``nn.Dropout(p=1.5)``), and running out of memory means sizes too large to build.
    Anything else is a bug in that class and keeps its traceback (None)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and "allocate" in text and "memory" in text
    ):
        wanted = re.search(r"allocate (\d+) bytes", text)
        size = f" ({int(wanted.group(1)) / 2**30:.1f} GiB)" if wanted else ""
        return UserError(f"{where}: building {target} ran out of memory{size}; use smaller "
                         f"{where}.* sizes")
    if isinstance(error, ValueError):
        return UserError(f"{where}: {target} refused its arguments ({text}); fix the {where}.* "
                         "keys")
    return None
