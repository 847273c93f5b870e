"""``trainer-launch``: the launch scripts of this folder, from an installed package.

    trainer-launch torchrun 4 recipe=mnist data.batch_size=512
    trainer-launch mpirun 4 recipe=mnist          (MPIRUN=..., HOSTFILE=... as in mpirun.sh)
    trainer-launch horovodrun 4 recipe=mnist
    trainer-launch install-horovod                (builds Horovod 0.28.1 for this Python)
    trainer-launch slurm --nodes=4 -- recipe=mnist   (sbatch options, then -- and overrides)
    trainer-launch --path                         (this folder, to copy or read the scripts)

Each script's header says what it does and which environment variables it reads; the
launcher runs it with bash, with PYTHON set to this interpreter unless already set.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
SCRIPTS = {
    "torchrun": "torchrun.sh",
    "mpirun": "mpirun.sh",
    "horovodrun": "horovodrun.sh",
    "install-horovod": "install_horovod.sh",
    "slurm": "slurm.sbatch",
}
USAGE = (f"usage: trainer-launch {{{','.join(SCRIPTS)}}} ARGS... | trainer-launch --path\n"
         "  (trainer-launch slurm [SBATCH OPTIONS] -- OVERRIDES)")


def fail(message: str) -> None:
    print(f"trainer-launch: error: {message}", file=sys.stderr)
    raise SystemExit(2)


# The launchers whose first argument is a process count (torchrun's per node).
_COUNTED = {"torchrun": "processes per node", "mpirun": "processes", "horovodrun": "processes"}


def _check(name: str, args: list[str]) -> None:
    """The arguments a script would pass on to a launcher that fails on them in its own
    words (torchrun's ``ValueError: Unsupported nproc_per_node value: two``)."""
    if name in _COUNTED:
        count = args[0] if args else ""
        if not (count.isdigit() and int(count) > 0
                or name == "torchrun" and count in ("auto", "cpu", "gpu")):
            fail(f"{name}'s first argument is the number of {_COUNTED[name]}, a positive "
                 f"integer{' (or auto)' if name == 'torchrun' else ''}, "
                 f"{'not ' + repr(count) if count else 'and it is missing'}: "
                 f"trainer-launch {name} 2 [overrides...]")
    if name == "mpirun":
        mpirun = os.environ.get("MPIRUN", "mpirun")
        if shutil.which(mpirun) is None:
            bundled = Path(sys.executable).parent / "mpiexec"
            fail(f"{mpirun} not found" + (
                f"; this environment has MPICH's: MPIRUN={bundled} trainer-launch mpirun ..."
                if bundled.exists() else "; install an MPI (pip install mpich) or set MPIRUN "
                "to your mpirun/mpiexec"))


def command(argv: list[str]) -> list[str]:
    """The command ``trainer-launch argv`` runs."""
    if not argv or argv[0] not in SCRIPTS:
        what = f"unknown launcher '{argv[0]}'" if argv else "no launcher given"
        fail(f"{what}; choose one of: {', '.join(SCRIPTS)} (or --path, --help)")
    name, args = argv[0], argv[1:]
    _check(name, args)
    script = str(FOLDER / SCRIPTS[name])
    if name != "slurm":
        return ["bash", script, *args]
    options, overrides = (args[:args.index("--")], args[args.index("--") + 1:]) \
        if "--" in args else ([], args)
    if shutil.which("sbatch") is None:
        raise SystemExit("trainer-launch: sbatch not found: run this on a SLURM login node")
    return ["sbatch", *options, script, *overrides]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--path"]:
        print(FOLDER)
        return
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        print(__doc__.split("\n\n", 1)[1])
        return
    cmd = command(argv)
    env = {**os.environ, "TRAINER_LAUNCH_DIR": str(FOLDER)}
    env.setdefault("PYTHON", sys.executable)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
