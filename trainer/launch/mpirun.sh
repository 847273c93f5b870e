#!/usr/bin/env bash
# Data-parallel training under mpirun/mpiexec (OpenMPI or MPICH). MPI starts the processes and
# shares rank 0's address; the collectives run over torch.distributed (Gloo/NCCL).
#
#   single node:   launch/mpirun.sh 4 recipe=mnist data.batch_size=512
#   multi-node:    HOSTFILE=hosts launch/mpirun.sh 16 recipe=mnist data.batch_size=2048
#                  (OpenMPI hostfile lines "node0 slots=8"; MPICH lines "node0:8")
#   no system MPI: pip install -e '.[mpi,mpich]' puts MPICH's mpiexec in the virtualenv;
#                  MPIRUN=.venv/bin/mpiexec launch/mpirun.sh 2 recipe=mnist
#
# Under MPI launchers torch starts with one thread per process: set dist.threads_per_worker.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/common.sh"
np=${1:?usage: launch/mpirun.sh NPROCS [overrides...]}
shift
run_dir=$(run_dir_override "$@")
mpirun=${MPIRUN:-mpirun}
args=(-n "$np")
if "$mpirun" --version 2>/dev/null | grep -q "Open MPI"; then
  [[ $(id -u) -eq 0 ]] && args+=(--allow-run-as-root)
  [[ -n ${HOSTFILE:-} ]] && args+=(--hostfile "$HOSTFILE")
  args+=(--bind-to none -x PATH -x LD_LIBRARY_PATH)
else
  [[ -n ${HOSTFILE:-} ]] && args+=(-f "$HOSTFILE")
fi
exec "$mpirun" "${args[@]}" "${PYTHON:-python}" -m trainer ${run_dir:+"$run_dir"} "$@"
