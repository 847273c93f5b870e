"""``data.batch_size``: a number, or ``auto`` (the goodput controller chooses it during the run,
trainer/callbacks/adaptive_batch.py). What the rest of the framework reads from it: the batch
the run starts at, and the largest it may reach."""

from __future__ import annotations

from omegaconf import DictConfig, open_dict

AUTO = "auto"
# data.batch_size_max when unset: the controller's range is 32 x M0 (M0 = 128: up to 4,096).
DEFAULT_RANGE = 32


def is_auto(cfg: DictConfig) -> bool:
    return cfg.data.get("batch_size") == AUTO


def settle(cfg: DictConfig) -> None:
    """With ``data.batch_size=auto``, M0 in both keys that mean it: ``data.batch_size_min``
    (the controller's floor and starting batch) and ``optimizer.base_batch_size`` (AdaScale's
    base batch); the one the user set wins, data.batch_size_min first. Run before the config
    is checked, so that the run's stored config says what it ran with."""
    if not is_auto(cfg):
        return
    with open_dict(cfg):
        if cfg.data.get("batch_size_min") is None:
            cfg.data.batch_size_min = cfg.optimizer.get("base_batch_size", 256)
        if cfg.optimizer.get("base_batch_size") != cfg.data.batch_size_min:
            cfg.optimizer.base_batch_size = cfg.data.batch_size_min


def start_batch(cfg: DictConfig) -> int:
    """The global batch of the run's first step."""
    return int(cfg.data.batch_size_min) if is_auto(cfg) else int(cfg.data.batch_size)


def largest_batch(cfg: DictConfig) -> int:
    """The largest global batch the run may train at (the controller's cap; before the cap
    by the training rows, which the data knows)."""
    if not is_auto(cfg):
        return int(cfg.data.batch_size)
    high = cfg.data.get("batch_size_max")
    return int(high) if high is not None else DEFAULT_RANGE * int(cfg.data.batch_size_min)
