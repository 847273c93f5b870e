"""Every private API of another package that the framework touches, in one place.

Each is a name without a public equivalent in the version this was written for; an upgrade that
moves one fails here, and in tests/test_compat.py, which names the version each was written
for, instead of somewhere deep in a run. Nothing outside this module reaches into another
package's underscored names.
"""

from __future__ import annotations

import math
from typing import Any

# The versions these were written and tested against (tests/test_compat.py checks each use).
WRITTEN_FOR = {"torch": "2.14.1", "hydra-core": "1.3.8", "horovod": "0.28.1",
               "numpy": "2.4.6"}


# --- hydra-core ---------------------------------------------------------------------------

def locate(path: str) -> Any:
    """The object a dotted ``_target_`` names (hydra.utils.get_object's lookup, without the
    ERROR log line get_object writes before raising)."""
    from hydra._internal.utils import _locate

    return _locate(path)


def hydra_group_options(argv: list[str], primary_config: str, config_name: str):
    """``(args, options)``: Hydra's own parse of a command line, and ``options(group)``, the
    group's options as Hydra's config repository sees them for it (search path plugins,
    ``--config-dir``); None where Hydra's parser refuses the command line (it reports it)."""
    import os

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path, get_args_parser
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.object_type import ObjectType

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        return None
    search_path = create_config_search_path(primary_config)
    if args.config_dir is not None:  # as hydra.main adds it
        search_path.prepend(provider="command-line",
                            path=f"file://{os.path.abspath(args.config_dir)}",
                            anchor=SearchPathQuery(provider="schema"))
    loader = ConfigLoaderImpl(config_search_path=search_path)
    overrides = list(args.overrides)
    name = args.config_name or config_name

    def options(group: str) -> list[str]:
        return loader.get_group_options(group, ObjectType.CONFIG, name, overrides)

    return args, options


# --- torch --------------------------------------------------------------------------------

def loss_scale_tensor(scaler) -> Any:
    """A GradScaler's current scale as its own device tensor (``get_scale()`` returns a float,
    a host synchronisation every step)."""
    return scaler._scale


def graph_task_id() -> int:
    """The running backward pass's id (one per ``backward()`` call; -1 outside one): tells a
    gradient hook which backward it is in."""
    import torch

    return torch._C._current_graph_task_id()


# --- numpy --------------------------------------------------------------------------------

def numpy_pickle_globals() -> list[Any]:
    """What pickling a numpy scalar or array names (its reconstruct functions, the dtype and
    each dtype's class): the names torch's safe loader must be allowed to rebuild them from."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core to np._core
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes)
                     if name.endswith("DType") and isinstance(getattr(np.dtypes, name), type)]
    return [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype,
            *dtype_classes]


# --- horovod ------------------------------------------------------------------------------

def silence_horovod_optimizer(optimizer) -> None:
    """Make a retired hvd.DistributedOptimizer's gradient hooks inert: it keeps no handles to
    remove them by, and a hook of it would start an all-reduce nobody waits for. With an
    infinite countdown of backward passes each hook only counts."""
    delays = getattr(optimizer, "_allreduce_delay", {})
    for p in delays:
        delays[p] = math.inf
