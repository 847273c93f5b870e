#!/usr/bin/env bash
# Data-parallel training under torchrun (torch.distributed: NCCL on GPUs, Gloo on the CPU).
#
#   single node:   launch/torchrun.sh 4 recipe=mnist data.batch_size=512
#   multi-node:    on every node, with the same MASTER_ADDR (node 0) and TRAINER_RUN_DIR:
#                  NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 TRAINER_RUN_DIR=runs/m1 \
#                    launch/torchrun.sh 8 recipe=mnist data.batch_size=1024
#   fault tolerant: MAX_RESTARTS=3 launch/torchrun.sh 4 recipe=mnist
#                  (a failed worker restarts every worker, which resume from the last checkpoint)
#
# The first argument is the number of processes per node; the rest are Hydra overrides.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/common.sh"
nproc=${1:?usage: launch/torchrun.sh NPROC_PER_NODE [overrides...]}
shift
run_dir=$(run_dir_override "$@")
if [[ ${NNODES:-1} -gt 1 ]]; then
  where=(--nnodes="$NNODES" --node-rank="${NODE_RANK:?set NODE_RANK}"
         --master-addr="${MASTER_ADDR:?set MASTER_ADDR}" --master-port="${MASTER_PORT:-29500}")
else
  where=(--standalone)
fi
# TORCHRUN if set; else torchrun's agent through $PYTHON (trainer-launch sets it to its own
# interpreter, whose bin/ need not be on PATH), as trainer.launch.torchrun_agent runs it: a
# SIGTERM to the job then ends in exit 143 and one line (bare torchrun: its traceback and
# exit 1); else torchrun from PATH.
if [[ -n ${TORCHRUN:-} ]]; then
  launcher=("$TORCHRUN")
elif [[ -n ${PYTHON:-} ]]; then
  launcher=("$PYTHON" -m trainer.launch.torchrun_agent)
else
  launcher=(torchrun)
fi
exec "${launcher[@]}" "${where[@]}" --nproc-per-node="$nproc" \
  --max-restarts="${MAX_RESTARTS:-0}" -m trainer ${run_dir:+"$run_dir"} "$@"
