#!/usr/bin/env bash
# Data-parallel training under horovodrun (Horovod backend). Build Horovod first:
# launch/install_horovod.sh.
#
#   single node:   launch/horovodrun.sh 4 recipe=mnist data.batch_size=512
#   multi-node:    HOSTS=node0:4,node1:4 launch/horovodrun.sh 8 recipe=mnist data.batch_size=1024
#                  (or HOSTFILE=hosts with lines "node0 slots=4"; passwordless ssh between nodes)
#   fp16 gradients: launch/horovodrun.sh 4 recipe=mnist dist.compression=fp16
#
# The first argument is the total number of processes; the rest are Hydra overrides.
# HOROVOD_CONTROLLER=mpi|gloo picks Horovod's controller; unset, MPI where Horovod was built
# with it and an mpirun is on PATH (on 2 CPU workers Horovod's MPI all-reduce took 1.8 ms a step
# where its Gloo one took 7 ms: bench/cluster.py), else Gloo. MPICH's PyPI build gets a
# stand-in mpirun (launch/mpich/mpirun) that lets horovodrun recognise it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/common.sh"
np=${1:?usage: launch/horovodrun.sh NPROCS [overrides...]}
shift
run_dir=$(run_dir_override "$@")
if [[ -n ${HOSTFILE:-} ]]; then
  hosts=(--hostfile "$HOSTFILE")
else
  hosts=(-H "${HOSTS:-localhost:$np}")
fi
python=${PYTHON:-python}
controller=${HOROVOD_CONTROLLER:-}
if [[ -z $controller ]]; then
  controller=gloo
  if command -v mpirun >/dev/null &&
     "$python" -c "import horovod.torch as h, sys; sys.exit(not h.mpi_built())" 2>/dev/null; then
    controller=mpi
  fi
fi
if [[ $controller == mpi ]]; then
  # The workers see only MPI's variables: this tells dist.backend=auto the job is Horovod's.
  export HOROVOD_CONTROLLER=mpi
  version=$(mpirun --version 2>&1 || true)
  if [[ $version == *HYDRA* && $version != *MPICH* && $version != *Intel* ]]; then
    TRAINER_MPIRUN=$(command -v mpirun)
    export TRAINER_MPIRUN PATH="$here/mpich:$PATH"
  fi
else
  export HOROVOD_CONTROLLER=gloo
fi
exec "${HOROVODRUN:-horovodrun}" -np "$np" "${hosts[@]}" "--$controller" \
  "$python" -m trainer ${run_dir:+"$run_dir"} "$@"
