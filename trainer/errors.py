"""Errors meant for the person at the keyboard, not for a traceback."""


class UserError(Exception):
    """A problem with the user's input, config or files.

    The message is printed as one line, so it must name the problem and the fix.
    """


class WorkerLost(UserError):
    """Another worker died or hung: reported like any UserError, then the process ends at once.

    Tearing a broken Gloo/NCCL group down during interpreter exit can abort the process
    ("terminate called without an active exception"), turning a clean exit code into SIGABRT;
    by then every file that matters is closed (checkpoints are written atomically).
    """
