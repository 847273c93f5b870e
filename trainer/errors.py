"""Errors meant for the person at the keyboard, not for a traceback."""


class UserError(Exception):
    """A problem with the user's input, config or files.

    The message is printed as one line, so it must name the problem and the fix.
    """


class WorkerLost(UserError):
    """Workers lost each other (one died or hung, or they never met): reported like any
    UserError, but by every rank (each saw it from its own side, and no rank can count on
    another to say it), then the process ends at once.

    Tearing a broken Gloo/NCCL group down during interpreter exit can abort the process
    ("terminate called without an active exception"), turning a clean exit code into SIGABRT;
    by then every file that matters is closed (checkpoints are written atomically).
    """


class Preempted(Exception):
    """The run stopped on a signal (SIGTERM, SIGUSR1, SIGUSR2, SIGINT) after checkpointing the
    step it was on; the ``trainer`` command exits with 128 + the signal's number, as a process
    killed by that signal would, so schedulers see the usual code."""

    def __init__(self, signum: int, step: int, checkpoint) -> None:
        import signal

        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint "
                         f"{checkpoint}; resume with trainer.resume=auto")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def add_context(error: BaseException, where: str) -> None:
    """Say where the user's own exception was raised (``at step 3 on rank 0``, ``in the
    callback ema.on_step_end``), innermost first: the ``trainer`` command's first line reads
    it (trainer.tools.user_traceback), and ``trainer.fit``'s caller sees it as a note under
    the traceback."""
    places = getattr(error, "trainer_where", None)
    if places is None:
        try:
            error.trainer_where = places = []
        except AttributeError:  # (an exception type that takes no attributes)
            return
    places.append(where)
    error.add_note(f"(trainer: {where})")
