"""Shared test code: ``config`` (paths, the composed and shrunk config), ``runs`` (in-process,
CLI and multi-process launches), ``compare`` (weights and the float64 equivalence settings),
``user_project`` (the example outside project), ``errors`` (the one-line bad-input check),
``signals`` (a callback that signals its own process, and the pace of a signalled
multi-worker run). Fixtures live in tests/conftest.py."""

from tests.helpers.compare import EQUIVALENCE, EXACT, FLOAT64, max_difference, weights
from tests.helpers.config import (
    FROZEN,
    ROOT,
    SHARED_DATA,
    SHRINK,
    VGG_SMALL,
    compose_config,
)
from tests.helpers.runs import (
    BIN,
    HAVE_MPI,
    cli_in_process,
    descendants,
    finish,
    launch,
    make_fake_mnist,
    needs_mpi,
    run,
    run_cli,
    train_in_process,
)
from tests.helpers.signals import PACED, STOPPABLE_STEPS

__all__ = ["BIN", "EQUIVALENCE", "EXACT", "FLOAT64", "FROZEN", "HAVE_MPI", "PACED", "ROOT",
           "SHARED_DATA", "SHRINK", "STOPPABLE_STEPS", "VGG_SMALL", "cli_in_process",
           "compose_config", "descendants", "finish", "launch", "make_fake_mnist",
           "max_difference", "needs_mpi", "run", "run_cli", "train_in_process", "weights"]
