"""Hydra discovers this module (``hydra_plugins`` is its namespace for plugins) and, through it,
the config folders that installed packages offer with a ``trainer.configs`` entry point.

Kept import-light: Hydra imports every plugin module on every start, for any application.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class TrainerConfigsSearchPath(SearchPathPlugin):
    """Appends ``pkg://<module>`` for each ``trainer.configs`` entry point, after the
    framework's own configs and anything the user put first (``--config-dir``,
    ``hydra.searchpath``), only when the primary config is the framework's."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from trainer.config import PRIMARY_CONFIG, offered_config_modules

        if not any(e.path == PRIMARY_CONFIG for e in search_path.get_path()):
            return  # another Hydra application in this environment
        for module in offered_config_modules():
            search_path.append(provider=f"trainer.configs ({module})", path=f"pkg://{module}")
