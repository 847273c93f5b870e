"""Config schemas and their registration with Hydra's ConfigStore."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from trainer.config import schema

# configs/ sits beside the packages (installed with `pip install -e .`).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def register_configs() -> None:
    """Store the top-level schema and every option schema (idempotent)."""
    # ${len:${data.weights}}: a model's input width that follows its data's.
    OmegaConf.register_new_resolver("len", len, replace=True)
    # ${sum_epochs:${trainer.stages}}: a staged run's length follows its stages' epochs.
    OmegaConf.register_new_resolver(
        "sum_epochs", lambda stages: sum(int(s["epochs"]) for s in stages), replace=True
    )
    store = ConfigStore.instance()
    store.store(name="train_schema", node=schema.TrainConfig)
    store.store(group="schema/optimizer", name="sgd", node=schema.SGDConfig)
    store.store(group="schema/optimizer", name="adam", node=schema.AdamConfig)
    store.store(group="schema/optimizer", name="rmsprop", node=schema.RMSpropConfig)
    store.store(group="schema/optimizer", name="lamb", node=schema.LAMBConfig)
    store.store(group="schema/optimizer", name="lars", node=schema.LARSConfig)
    store.store(group="schema/schedule", name="constant", node=schema.ScheduleConfig)
    store.store(group="schema/schedule", name="step", node=schema.StepScheduleConfig)
    store.store(group="schema/schedule", name="cosine", node=schema.CosineScheduleConfig)
    store.store(group="schema/schedule", name="poly", node=schema.PolyScheduleConfig)
    store.store(group="schema/schedule", name="increase_batch",
                node=schema.IncreaseBatchScheduleConfig)
    store.store(group="schema/noise", name="none", node=schema.NoiseConfig)
    store.store(group="schema/noise", name="annealed", node=schema.AnnealedNoiseConfig)
    store.store(group="schema/noise", name="small_batch", node=schema.SmallBatchNoiseConfig)

    from recipes import register_schemas

    register_schemas(store)


def compose_config(*overrides: str) -> DictConfig:
    """The composed training config for these command-line style overrides, without Hydra's
    run directory or logging: for tests, benchmarks and notebooks."""
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))
