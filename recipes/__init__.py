"""The shipped workloads. Each recipe is a config in ``configs/recipe/`` plus its model and
data code in a package here; nothing recipe-specific lives in ``trainer/``."""

from hydra.core.config_store import ConfigStore


def register_schemas(store: ConfigStore) -> None:
    """Store every recipe's typed schemas under ``schema/<group>/<option>``."""
    from recipes.asl import config as asl_config
    from recipes.headlines import config as headlines_config
    from recipes.linreg import config as linreg_config
    from recipes.mnist import config as mnist_config
    from recipes.transfer import config as transfer_config

    mnist_config.register(store)
    asl_config.register(store)
    linreg_config.register(store)
    headlines_config.register(store)
    transfer_config.register(store)
