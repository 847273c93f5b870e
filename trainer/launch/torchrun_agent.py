"""torchrun as ``launch/torchrun.sh`` (and so ``trainer-launch torchrun``) runs it: torch's own
agent (``torch.distributed.run``, the same arguments), with two of its endings made the
trainer's.

- A signal to the agent (a scheduler stopping the job): the agent passes it to the workers,
  which checkpoint the step they are on and say so; the job then exits 128 + the signal (143
  for SIGTERM) with one line, as a single ``trainer`` process does, instead of torchrun's
  ``SignalException`` traceback and exit 1.
- A worker that stopped first on bad input (exit 2, its node's line already printed) or on a
  signal it received (128 + it, after its checkpoint): the job exits with its code, without
  torchrun's ``ChildFailedError`` report repeating it.

Any other failure (a crash, a worker killed) keeps torchrun's report and exit 1. Bare
``torchrun`` keeps torch's endings.
"""

from __future__ import annotations

import sys

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except SignalException as exc:
        print(f"trainer-launch: torchrun stopped by {exc.sigval.name}: the workers checkpointed "
              "(their line above); run the same command again to resume", file=sys.stderr,
              flush=True)
        sys.exit(128 + int(exc.sigval))
    except ChildFailedError as exc:
        # The first worker to stop decides (the agent then stops the others with SIGTERM).
        # torch reports a worker ended by a signal as minus its number.
        code = exc.get_first_failure()[1].exitcode
        code = 128 - code if code < 0 else code
        if code == EXIT_USER_ERROR or code > 128:
            sys.exit(code)
        raise


if __name__ == "__main__":
    main()
