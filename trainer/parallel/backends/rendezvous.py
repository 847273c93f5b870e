"""Where rank 0 listens: MASTER_ADDR / MASTER_PORT for each launcher.

torchrun sets both. No MPI launcher does, and a fixed port that happens to be taken makes rank 0
fail while the others wait forever, so under mpirun rank 0 binds a free port itself and sends
its address to the other ranks over MPI (mpi4py). Under SLURM the address is the first host of
the allocation and the port is derived from the job id, so every task computes the same one.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess

from trainer.errors import UserError
from trainer.parallel.identity import Identity


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def this_host_address() -> str:
    """An address of this host that the other nodes can reach (best effort)."""
    host = socket.gethostname()
    try:
        return socket.gethostbyname(host)
    except OSError:
        return "127.0.0.1"


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list such as ``gpu[03-05,07],cpu1`` -> ``gpu03``."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
            timeout=30, check=True,
        ).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass  # no scontrol on this node: parse the list ourselves
    first = re.split(r",(?![^\[]*\])", nodelist)[0]
    match = re.fullmatch(r"(.*?)\[([^\]]+)\](.*)", first)
    if not match:
        return first
    prefix, ranges, suffix = match.groups()
    return prefix + ranges.split(",")[0].split("-")[0] + suffix


def _mpi_world():
    try:
        from mpi4py import MPI
    except ImportError:
        raise UserError(
            "launched by an MPI launcher without MASTER_ADDR/MASTER_PORT set, and mpi4py is "
            "not installed to share them: pip install mpi4py (and mpich, where the machine has "
            "no MPI of its own), or export MASTER_ADDR and MASTER_PORT to every rank"
        ) from None
    return MPI.COMM_WORLD


def mpi_address(ident: Identity) -> tuple[str, int]:
    """Rank 0's address and a free port on it, shared over MPI; checks the MPI pairing."""
    comm = _mpi_world()
    if comm.Get_size() != ident.world_size or comm.Get_rank() != ident.rank:
        raise UserError(
            f"the {ident.launcher} launcher says rank {ident.rank} of {ident.world_size}, but "
            f"mpi4py's MPI library says rank {comm.Get_rank()} of {comm.Get_size()}: the "
            "launcher and the MPI library mpi4py was built against are from different MPIs; "
            "use the mpirun/mpiexec that belongs to that library (pip's mpich: .venv/bin/mpiexec)"
        )
    address = (this_host_address(), free_port()) if ident.rank == 0 else None
    return comm.bcast(address, root=0)


def port_taken(port: int) -> bool:
    """Whether another process listens on ``port`` here (TIME_WAIT leftovers do not count:
    the store binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError:
            return True
    return False


def _agree_port_is_free(ident: Identity, addr: str, port: int) -> None:
    """A MASTER_PORT given to an MPI job: rank 0 checks it is free before anyone connects, and
    every rank hears the verdict over MPI. A taken port otherwise fails rank 0 at once, while
    the others connect to whatever listens there and wait for it (past dist.timeout)."""
    try:
        from mpi4py import MPI
    except ImportError:
        return
    comm = MPI.COMM_WORLD
    if comm.Get_size() != ident.world_size:
        return  # (mpi_address's check names the mismatch where it matters)
    taken = port_taken(port) if ident.rank == 0 else None
    if comm.bcast(taken, root=0):
        raise UserError(
            f"MASTER_PORT={port} is taken on rank 0's host ({addr}): another process listens "
            "there; choose a free port, or unset MASTER_PORT (under mpirun rank 0 then picks a "
            "free one itself)")


def rendezvous(ident: Identity) -> tuple[str, int]:
    """MASTER_ADDR and MASTER_PORT for this job (set in the environment and returned)."""
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if addr and port and ident.launcher in ("openmpi", "mpich", "pmix"):
        _agree_port_is_free(ident, addr, int(port))
    if not (addr and port):
        if ident.launcher in ("openmpi", "mpich", "pmix"):
            addr, port = mpi_address(ident)
        elif ident.launcher == "slurm":
            addr = addr or first_slurm_host(os.environ.get("SLURM_JOB_NODELIST", "localhost"))
            port = port or 20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000
        else:
            raise UserError(
                f"launched by {ident.launcher} but MASTER_ADDR/MASTER_PORT are not set; "
                "export them to every rank"
            )
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = str(addr), str(port)
    return str(addr), int(port)
