"""The config: where its YAML lives, its schemas, and composing it outside the CLI.

The framework's groups ship inside the package (``trainer/conf``, the primary config
``pkg://trainer.conf``). Options from other packages join through Hydra's search path: an
installed package that declares a ``trainer.configs`` entry point (the shipped recipes do) is
appended by the search-path plugin in ``hydra_plugins/trainer_configs``; a user's own folder
comes with ``--config-dir DIR`` or ``hydra.searchpath=[pkg://mypkg.conf]``.
"""

from __future__ import annotations

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from trainer.config import schema
from trainer.config.from_signature import schema_from_signature

CONFIG_MODULE = "trainer.conf"
PRIMARY_CONFIG = f"pkg://{CONFIG_MODULE}"
# Entry-point group through which an installed package offers its config folder.
ENTRY_POINT_GROUP = "trainer.configs"


def register_configs() -> None:
    """Store the top-level schema and the framework's option schemas (idempotent)."""
    # ${len:${data.weights}}: a model's input width that follows its data's.
    OmegaConf.register_new_resolver("len", len, replace=True)
    # ${sum_epochs:${trainer.stages}}: a staged run's length follows its stages' epochs.
    OmegaConf.register_new_resolver(
        "sum_epochs", lambda stages: sum(int(s["epochs"]) for s in stages), replace=True
    )
    # ${swept_dirname:${hydra.overrides.task}}: a sweep job's folder named by its swept keys.
    OmegaConf.register_new_resolver("swept_dirname", swept_dirname, replace=True)
    store = ConfigStore.instance()
    store.store(name="train_schema", node=schema.TrainConfig)
    for group, options in _built_in_options().items():
        base = schema.FRAMEWORK_KEYS.get(group)
        for name, (cls, extra) in options.items():
            node = schema_from_signature(cls, base, extra)
            store.store(group=f"schema/{group}", name=name, node=node)


SWEEP_FUNCTIONS = ("range(", "choice(", "interval(", "glob(", "tag(", "sort(", "shuffle(")


def swept_dirname(task_overrides, argv: list[str] | None = None) -> str:
    """The overrides of this sweep job whose key the command line sweeps (``a=1,2``,
    ``range(...)``, ``choice(...)``...) as ``key=value,key=value``: a job folder named by what
    differs between the jobs, not by every fixed override (a data path would become folders).
    The sweep's own command line is this process's: the launcher builds each job's config in
    it. A sweep config's ``hydra.sweeper.params`` names its folders itself (``batch_${...}``)."""
    import sys

    def key(arg: str) -> str:
        return arg.partition("=")[0].lstrip("+~")

    swept = {key(a) for a in (sys.argv[1:] if argv is None else argv)
             if "=" in a and ("," in a.partition("=")[2]
                              or a.partition("=")[2].startswith(SWEEP_FUNCTIONS))}
    chosen = [str(o) for o in task_overrides if key(str(o)) in swept]
    return ",".join(chosen).replace("/", "_") or "job"


def _built_in_options() -> dict[str, dict[str, tuple[type, dict]]]:
    """The built-in options that take their schema (keys, types, defaults) from their class:
    ``{group: {option: (class, extra keys)}}``."""
    import torch

    from trainer.large_batch import grad_noise
    from trainer.optim import LAMB, LARS, schedule

    return {
        "optimizer": {
            "sgd": (torch.optim.SGD, {}), "adam": (torch.optim.Adam, {}),
            "rmsprop": (torch.optim.RMSprop, {}), "lars": (LARS, {}),
            # fused: NVIDIA apex's FusedLAMB on CUDA when apex is installed (never required).
            "lamb": (LAMB, {"fused": (bool, False)}),
        },
        "schedule": {"constant": (schedule.Constant, {}), "step": (schedule.Step, {}),
                     "cosine": (schedule.Cosine, {}), "poly": (schedule.Poly, {}),
                     "increase_batch": (schedule.IncreaseBatch, {})},
        "noise": {"none": (grad_noise.NoNoise, {}), "annealed": (grad_noise.Annealed, {}),
                  "small_batch": (grad_noise.SmallBatch, {})},
    }


def offered_config_modules() -> list[str]:
    """The config packages installed packages offer through the ``trainer.configs`` entry
    point (``name = "mypkg.conf"``), in a stable order."""
    from importlib.metadata import entry_points

    return sorted({ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)})


def compose_config(*overrides: str) -> DictConfig:
    """The composed training config for these command-line style overrides, without Hydra's
    run directory or logging: for tests, benchmarks and notebooks."""
    register_configs()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose("train", overrides=list(overrides))
