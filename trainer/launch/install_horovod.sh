#!/usr/bin/env bash
# Build Horovod 0.28.1 (its last release) from PyPI against the torch installed in this Python,
# with the Gloo and MPI controllers (and NCCL when HOROVOD_GPU_OPERATIONS=NCCL is exported on a
# CUDA machine). About 3 minutes on 2 cores.
#
#   PYTHON=.venv/bin/python launch/install_horovod.sh
#
# Horovod 0.28.1 does not build unchanged against torch >= 2.1, so this script:
#   - pins cmake < 4 (Horovod's CMakeLists predate CMake 4's removed compatibility);
#   - builds with --no-build-isolation, against the torch already installed;
#   - compiles through a g++ wrapper that turns the -std=c++14 Horovod's CMake forces into the
#     standard torch's headers need (c++20 for torch >= 2.14, c++17 for torch 2.1-2.13);
#   - sets CUDA_HOME to the real CUDA toolkit when torch is a CUDA build (Horovod otherwise
#     guesses it from an nvcc shim and fails).
# MPI: with no system MPI, `pip install mpich` (the project's `mpi` extra) provides mpicxx.
set -euo pipefail
py=${PYTHON:-python}
if "$py" -c 'import horovod, horovod.torch, sys; sys.exit(horovod.__version__ != "0.28.1")' \
    2>/dev/null; then
  echo "horovod 0.28.1 is already built for this Python; nothing to do"
  exit 0
fi
bindir=$(dirname "$("$py" -c 'import sys; print(sys.executable)')")
export PATH="$bindir:$PATH"

std=$("$py" - <<'PY'
import torch
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
print("c++20" if (major, minor) >= (2, 14) else "c++17")
PY
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
real_cxx=$(command -v "${CXX:-g++}")
cat >"$work/g++" <<WRAP
#!/usr/bin/env bash
args=()
for a in "\$@"; do
  case "\$a" in -std=c++11|-std=c++14|-std=c++17|-std=gnu++14) a=-std=$std ;; esac
  args+=("\$a")
done
exec "$real_cxx" "\${args[@]}"
WRAP
chmod +x "$work/g++"

cuda=$("$py" -c 'import torch; print(torch.version.cuda or "")')
if [[ -n $cuda ]]; then
  if [[ -z ${CUDA_HOME:-} ]]; then
    for dir in /usr/local/cuda /usr/local/cuda-"$cuda"; do
      if [[ -x $dir/bin/nvcc && -d $dir/include ]]; then export CUDA_HOME=$dir; break; fi
    done
  fi
  if [[ -n ${CUDA_HOME:-} ]]; then
    # Horovod's FindCUDAToolkit derives the toolkit from the first nvcc on PATH; a wrapper
    # script such as /usr/local/bin/nvcc sends it to /usr/local, which has no CUDA headers.
    export PATH="$CUDA_HOME/bin:$PATH" CUDAToolkit_ROOT="$CUDA_HOME"
  fi
fi

"$py" -m pip install --quiet "cmake<4" packaging wheel setuptools
export CXX="$work/g++" HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 \
  HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
if command -v mpicxx >/dev/null; then export HOROVOD_WITH_MPI=1; fi
MAKEFLAGS="-j$(nproc)" "$py" -m pip install --no-build-isolation --no-cache-dir \
  "horovod[pytorch]==0.28.1"
"$py" -c 'import horovod, horovod.torch as hvd; print("horovod", horovod.__version__, "gloo", hvd.gloo_built(), "mpi", hvd.mpi_built(), "nccl", hvd.nccl_built())'
