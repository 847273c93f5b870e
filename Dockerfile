# trainer for GPU clusters: CUDA with cuDNN and NCCL, torch/torchvision, this project with its
# mpi and qat extras, OpenMPI, and Horovod built with NCCL + MPI + Gloo by the same script the
# README's test command runs. The project is installed as a package (not editable: the image
# holds no checkout), in a virtualenv owned by a non-root user; jobs run from /home/trainer.
#
#   docker build -t trainer .
#   docker run --gpus all --ipc=host trainer                                  # recipe=mnist
#   docker run --gpus all --ipc=host trainer torchrun --standalone --nproc-per-node=8 \
#       -m trainer recipe=mnist data.batch_size=1024
#
# The devel image, not the runtime one: Horovod compiles its NCCL operations against CUDA's
# headers and nvcc. Change the base with --build-arg CUDA_IMAGE=... (keep CUDA >= torch's).
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# OpenMPI (clusters' usual MPI; mpi4py is built against it below), NCCL's headers for Horovod,
# a compiler and CMake for Horovod's build, ssh for mpirun across nodes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev g++ make git \
        openmpi-bin libopenmpi-dev openssh-client \
        libnccl2 libnccl-dev \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 --shell /bin/bash trainer \
    && install -d -o trainer -g trainer /opt/venv /tmp/trainer-src
COPY --chown=trainer:trainer . /tmp/trainer-src
USER 1000
WORKDIR /home/trainer

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TRAINER_DATA_DIR=/home/trainer/data

# The README's install, as a package, with the cluster's MPI instead of MPICH from PyPI:
# mpi4py compiled against OpenMPI, Horovod with NCCL for the GPU collectives (the packaged
# launch/install_horovod.sh, through trainer-launch); then the source copy goes.
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install --no-binary=mpi4py torch==2.14.1 torchvision==0.29.1 \
       '/tmp/trainer-src[mpi,qat]' \
    && HOROVOD_GPU_OPERATIONS=NCCL trainer-launch install-horovod \
    && horovodrun --check-build \
    && rm -rf /tmp/trainer-src

CMD ["trainer", "recipe=mnist"]
