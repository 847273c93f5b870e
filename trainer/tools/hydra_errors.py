"""Hydra's and OmegaConf's own errors as one line each, naming the key and the fix.

Hydra reports a bad override in 4 to 7 lines plus "Set the environment variable
HYDRA_FULL_ERROR=1", and exits 1; the ``trainer`` command promises one line and exit 2 for
every bad input. The exception objects carry what is needed (the full key, the value, the
reason), so the line is built from them, not from Hydra's text.
"""

from __future__ import annotations

import dataclasses
import re
from difflib import get_close_matches

from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from trainer.config.schema import moved

GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _known_keys(error: OmegaConfBaseException) -> list[str]:
    kind = getattr(error, "object_type", None)
    return [f.name for f in dataclasses.fields(kind)] if dataclasses.is_dataclass(kind) else []


def one_of(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def _option_key(key: str, node) -> str | None:
    """The line for a key an option without a schema lacks (``model.hiden=64``): the nearest
    key it has or its ``_target_`` takes, or that the class takes it and the option does not
    set it (so ``+`` adds it), or that the class does not take it at all. None: no class to
    ask (Hydra's node has no ``_target_``)."""
    from omegaconf import DictConfig

    from trainer.config.instantiate import accepted_arguments, check_target, not_an_argument

    if not isinstance(node, DictConfig) or not isinstance(node.get("_target_"), str):
        return None
    try:
        accepted = accepted_arguments(check_target(node._target_, key.rpartition(".")[0]))
    except Exception:  # noqa: BLE001 (a _target_ that does not import says so at its check)
        return None
    name = key.rpartition(".")[2]
    has = {str(k) for k in node.keys() if not str(k).startswith("_")}
    if accepted is None or name in accepted:
        return (f"{key} is not set by the option (its keys: {', '.join(sorted(has))}); "
                f"{node._target_} takes it: add it with +{key}=VALUE")
    return not_an_argument(key, node._target_, accepted, tuple(sorted(has - accepted)))


def _unknown_key(error: OmegaConfBaseException) -> str:
    key = error.full_key
    if (line := moved(key)) is not None:
        return line
    group, _, name = key.rpartition(".")
    if not _known_keys(error) and (line := _option_key(key, error.parent_node)) is not None:
        return line
    if group in _NAMED_ENTRIES:  # callbacks.NAME, transforms.NAME, logger.outputs.NAME
        node = error.parent_node
        has = sorted(str(k) for k in node.keys()) if node is not None else []
        close = get_close_matches(name, has, n=1)
        if close:
            return f"{key} is not one of the run's {group}; did you mean {group}.{close[0]}?"
        return (f"{key} is not one of the run's {group} (it has: {', '.join(has) or 'none'}); "
                f"add one with +{key}._target_=your.Class (a {_NAMED_ENTRIES[group]})")
    known = [k for k in _known_keys(error) if not k.startswith("_")]
    close = get_close_matches(name, known, n=1)
    hint = (f"did you mean {group + '.' if group else ''}{close[0]}? " if close
            else f"it has: {', '.join(known)}; " if known else "")
    return (f"{key} is not a key of {'the ' + group + ' group' if group else 'the config'}; "
            f"{hint}`trainer --cfg job` lists the keys")


# Config nodes whose keys name entries of the user's choosing, each a _target_ of this kind.
_NAMED_ENTRIES = {"callbacks": "trainer.Callback", "transforms": "trainer.ModelTransform",
                  "logger.outputs": "trainer.LogOutput"}


def _omegaconf(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", None) or "the config"
    reason = _first_line(getattr(error, "msg", None) or str(error))
    if isinstance(error, ConfigAttributeError | ConfigKeyError) and error.full_key:
        return _unknown_key(error)
    if isinstance(error, InterpolationResolutionError):
        return (f"{key}: {reason}; fix or remove the ${{...}} interpolation (an environment "
                "variable it reads must be set, a key it names must exist)")
    if "does not support deletion" in reason:  # ~trainer.epochs: a key of a typed group
        return (f"~{key}: the framework's own keys cannot be removed; give it a value instead "
                f"({key}=VALUE; `trainer --cfg job` shows its default)")
    if isinstance(error, MissingMandatoryValue):
        return f"{key} must be set (it is ??? in the config); give it a value"
    if isinstance(error, ValidationError):
        choice = re.match(r"Invalid value '(.*)', expected one of \[(.*)\]", reason)
        if choice:  # an enum key (trainer.config.schema.Choice)
            value, names = choice.group(1), choice.group(2).split(", ")
            return f"{key}={value} is invalid: use {one_of(names)}"
        return f"{key}: {reason}; give a value of the key's type (`trainer --cfg job` shows it)"
    return f"{key}: {reason}"


def _global_package_missing(text: str) -> str | None:
    """A recipe (or sweep) file without ``# @package _global_``: Hydra puts its keys under
    ``recipe:``, which the config has no place for, and says so in its own terms."""
    found = re.match(r"In '(\w+)/([\w/.-]+)'", text)
    if not found:
        return None
    group, name = found.groups()
    if f"@{group}." not in text and f"Key '{group}' not in 'TrainConfig'" not in text:
        return None
    return (f"{group}/{name}.yaml puts its keys under {group}: instead of the whole config: "
            "make its first line `# @package _global_`, as every recipe has "
            "(docs/extending.md)")


def _yaml(error) -> str:
    """A config file that is not YAML (a recipe of the user's, usually): the file, where, and
    what the parser expected, instead of the parser's 100 frames."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a file"
    what = "; ".join(str(part) for part in (getattr(error, "context", None),
                                             getattr(error, "problem", None)) if part)
    return f"{where}: not valid YAML ({what or _first_line(error)}); fix that file"


def one_line(error: BaseException) -> str | None:
    """The line for a Hydra or OmegaConf error, or a config file's YAML error (None for
    anything else: a bug)."""
    import yaml

    if isinstance(error, yaml.YAMLError):
        return _yaml(error)
    if isinstance(error, OmegaConfBaseException):
        return _omegaconf(error)
    if isinstance(error, OverrideParseException):
        return (f"an override cannot be parsed ({_first_line(error)}); write KEY=VALUE and quote "
                f"values with brackets or spaces: 'model.hidden=[512,512]' ({GRAMMAR})")
    if isinstance(error, MissingConfigException):
        return f"{_first_line(error)}; `trainer --help` lists the options of each group"
    if isinstance(error, ConfigCompositionException):
        if (line := _global_package_missing(str(error))) is not None:
            return line
        if (line := _multiple_values(_first_line(error))) is not None:
            return line
        cause = error.__cause__
        if isinstance(cause, OmegaConfBaseException):
            return _omegaconf(cause)
        return _first_line(error)
    if isinstance(error, HydraException):
        return _first_line(error)
    return None


def _multiple_values(text: str) -> str | None:
    """``+callbacks=profiler``: the group has its options already (Hydra's advice, an
    ``override`` line, is for a defaults list, not the command line)."""
    found = re.match(r"Multiple values for ([\w/]+)\. To override a value use "
                     r"'override [\w/]+: ([^']+)'", text)
    if not found:
        return None
    group, choice = found.groups()
    if group != "callbacks":  # a group of one option
        return f"+{group}={choice}: {group} already has an option; choose it with {group}={choice}"
    return (f"+{group}={choice}: {group} already has its options (`trainer --cfg job` shows "
            f"them); replace them with {group}={choice}, or add to them with "
            f"{group}=[default,{choice}]")
