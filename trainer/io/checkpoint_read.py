"""Reading one checkpoint file back, which is not trusted: what it holds is checked before
anything uses it.

First the CRC32 of every record in the file (torch writes them, but its own reader does not
verify them, so a flipped byte would otherwise load as silently wrong weights), then
``torch.load(weights_only=True)``: a checkpoint cannot run code. Then the keys a trainer
checkpoint has, its format version, and finite weights.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from trainer.config.instantiate import upgrade_stored_config
from trainer.io.state_types import decode, safe_globals

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "model", "optimizer", "schedule", "progress", "rng", "config")


class CheckpointError(Exception):
    """A checkpoint file that cannot be used; the message says why."""


def _unobserved_range(name: str) -> bool:
    # A quantization observer (torch.ao / torchao naming) that has seen no data yet holds
    # min = +inf, max = -inf by design; NaN there is still an error.
    return ".activation_post_process." in name and name.endswith(("min_val", "max_val"))


def non_finite_tensors(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point entries holding NaN or Inf (observers' empty ranges aside)."""
    def bad(name: str, value: torch.Tensor) -> bool:
        if _unobserved_range(name):
            return bool(value.isnan().any())
        return not bool(value.isfinite().all())

    return [name for name, value in state_dict.items()
            if torch.is_tensor(value) and value.is_floating_point() and bad(name, value)]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and sanity-check one checkpoint; raise CheckpointError saying what is wrong."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_record = archive.testzip()
    except FileNotFoundError:
        raise CheckpointError("file not found") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"is truncated or not a torch file ({exc})") from None
    if bad_record is not None:
        raise CheckpointError(f"is corrupt (checksum mismatch in record {bad_record})")
    try:
        with torch.serialization.safe_globals(safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError("file not found") from None
    except pickle.UnpicklingError as exc:
        # weights_only refused an object: the file carries Python code to run (a pickle
        # payload) or classes no checkpoint of ours holds. torch's advice to retry with
        # weights_only=False is exactly what must not be done with an untrusted file.
        found = re.search(r"(Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+)",
                          str(exc))
        raise CheckpointError(
            "holds Python objects that safe loading refuses"
            f"{' (' + found.group(1) + ')' if found else ''}: it is not a trainer checkpoint, "
            "or it was tampered with; it was not loaded"
        ) from None
    except Exception as exc:  # torch raises several types for truncated or garbled zips
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"cannot be loaded ({type(exc).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"holds a {type(state).__name__}, not a trainer checkpoint")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"is not a trainer checkpoint (missing {', '.join(missing)})")
    wrong = [f"{key} is a {type(state[key]).__name__}" for key, kind in _MAPPINGS
             if key in state and not isinstance(state[key], kind)]
    if wrong:
        raise CheckpointError(f"is not a trainer checkpoint ({', '.join(wrong)}, not a mapping)")
    if not isinstance(state["format"], int) or isinstance(state["format"], bool):
        raise CheckpointError(f"is not a trainer checkpoint (format {state['format']!r})")
    if state["format"] > FORMAT_VERSION:
        raise CheckpointError(
            f"was written by a newer trainer (format {state['format']} > {FORMAT_VERSION})"
        )
    bad = non_finite_tensors(state["model"])
    if bad:
        raise CheckpointError(f"holds non-finite weights in {', '.join(bad[:3])}")
    return upgrade(decode(state))


# Checkpoints written before early stopping and the best checkpoint kept their own state held
# it in the run's progress, under these keys: callback name -> {its key: the progress's key}.
_MOVED_TO_CALLBACKS = {
    "early_stopping": {"best": "best", "bad_evals": "bad_evals"},
    "best_checkpoint": {"step": "best_checkpoint_step", "value": "best_checkpoint_value"},
}


# Parts of a checkpoint that must be mappings for anything to read them.
_MAPPINGS = (("config", dict), ("model", dict), ("progress", dict), ("callbacks", dict))


def literal(value: Any) -> Any:
    """A stored config as data: every ``${...}`` in its strings escaped, so OmegaConf never
    resolves it (a run stores its config resolved; an interpolation or a resolver found in a
    checkpoint was put there by someone else, and reading it must not read the environment
    or run a resolver)."""
    if isinstance(value, str):
        return value.replace("${", "\\${")
    if isinstance(value, dict):
        return {key: literal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [literal(item) for item in value]
    return value


def upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """An older checkpoint's state in the layout this version reads (in place, and returned):
    its callbacks' state where the callbacks keep it now, its config in this version's keys
    (and as data: :func:`literal`)."""
    if isinstance(state.get("config"), dict):
        state["config"] = literal(upgrade_stored_config(state["config"]))
    progress, callbacks = state.get("progress", {}), state.setdefault("callbacks", {})
    for name, keys in _MOVED_TO_CALLBACKS.items():
        if name not in callbacks and all(old in progress for old in keys.values()):
            callbacks[name] = {new: progress.pop(old) for new, old in keys.items()}
    return state
