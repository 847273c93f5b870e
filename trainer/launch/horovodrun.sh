#!/usr/bin/env bash
# Data-parallel training under horovodrun (Horovod backend; Gloo controller by default, MPI
# with HOROVOD_CONTROLLER=mpi). Build Horovod first: launch/install_horovod.sh.
#
#   single node:   launch/horovodrun.sh 4 recipe=mnist data.batch_size=512
#   multi-node:    HOSTS=node0:4,node1:4 launch/horovodrun.sh 8 recipe=mnist data.batch_size=1024
#                  (or HOSTFILE=hosts with lines "node0 slots=4"; passwordless ssh between nodes)
#   fp16 gradients: launch/horovodrun.sh 4 recipe=mnist dist.compression=fp16
#
# The first argument is the total number of processes; the rest are Hydra overrides.
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
controller=--gloo
[[ ${HOROVOD_CONTROLLER:-gloo} == mpi ]] && controller=--mpi
exec "${HOROVODRUN:-horovodrun}" -np "$np" "${hosts[@]}" "$controller" \
  "${PYTHON:-python}" -m trainer ${run_dir:+"$run_dir"} "$@"
