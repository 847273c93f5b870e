"""Config schemas and their registration with Hydra's ConfigStore."""

from hydra.core.config_store import ConfigStore

from trainer.config import schema


def register_configs() -> None:
    """Store the top-level schema and every option schema (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=schema.TrainConfig)
    store.store(group="schema/optimizer", name="sgd", node=schema.SGDConfig)
    store.store(group="schema/optimizer", name="adam", node=schema.AdamConfig)
    store.store(group="schema/optimizer", name="rmsprop", node=schema.RMSpropConfig)

    from recipes import register_schemas

    register_schemas(store)
