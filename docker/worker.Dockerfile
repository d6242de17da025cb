# prunebench GPU worker image: the API's package plus the `worker` extra (torch, torchvision,
# torch-pruning, pycocotools, opencv-python-headless, onnx, onnxslim) and the `gpu` extra (TensorRT,
# onnxruntime-gpu for ONNX Runtime's CUDA execution provider).
#
#   docker build -f docker/worker.Dockerfile -t prunebench-worker .
#
# Why python:3.11-slim and not nvidia/cuda: the Linux x86_64 torch==2.14.1 wheel on PyPI is a
# CUDA 13.0 build that brings its CUDA user-space libraries as pip dependencies (cuda-toolkit 13.0.x
# runtime, cuBLAS, cuDNN 9 for CUDA 13, NCCL, ...). An nvidia/cuda:13.0.x-cudnn-runtime base would
# ship a second copy of the same libraries (several GB) that torch does not load. What the container
# needs from the host is only the NVIDIA driver (libcuda, nvidia-smi), which the NVIDIA Container
# Toolkit injects at start when a GPU is requested. The host driver must support CUDA 13.0
# (R580 or newer). NVIDIA_DRIVER_CAPABILITIES below asks the toolkit for compute (libcuda) and
# utility (nvidia-smi, used by the compose healthcheck).
#
# opencv-python-headless needs no libGL/X libraries, so no apt packages are installed at all.
# Needs BuildKit (the default builder since Docker 23) for RUN --mount.
# Base image pinned by tag; pin it by digest too in production for byte-for-byte reproducible rebuilds.

FROM python:3.11.14-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Same non-root UID/GID as the API image: both write the shared store.
RUN groupadd --system --gid 10001 prunebench \
    && useradd --system --no-log-init --uid 10001 --gid prunebench --create-home --home-dir /home/prunebench prunebench \
    && mkdir -p /store \
    && chown prunebench:prunebench /store

# Base + worker requirements from pyproject.toml alone: the multi-GB torch layer is rebuilt only when
# pyproject.toml changes, not on every source edit.
FROM base AS requirements
WORKDIR /src
COPY pyproject.toml constraints.txt ./
# The worker extra plus the gpu extra (TensorRT, onnxruntime-gpu); onnxruntime-gpu replaces the CPU
# onnxruntime wheel, which provides the same module.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = p['optional-dependencies']; reqs = p['dependencies'] + [r for r in extras['worker'] + extras['gpu'] if not r.startswith(('prunebench', 'onnxruntime=='))]; print('\n'.join(reqs))" > requirements.txt

FROM base AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY service ./service
COPY worker ./worker
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM base AS worker
# Optional extra index for a different torch build, e.g.
#   --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cu130
ARG PIP_EXTRA_INDEX_URL=""
COPY --from=requirements /src/requirements.txt /src/constraints.txt /tmp/
RUN pip install --no-cache-dir -c /tmp/constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt /tmp/constraints.txt
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install --no-cache-dir --no-deps /dist/prunebench-*.whl \
    && pip check
ENV PRUNEBENCH_STORE_DIR=/store \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /home/prunebench
# rq's warm shutdown: on SIGTERM the worker stops taking jobs and finishes the running one; the compose
# stop_grace_period bounds how long it may take before Docker sends SIGKILL.
STOPSIGNAL SIGTERM
# `--device 0` is the first GPU *visible in the container*: compose reserves one GPU per worker
# service, which the container always sees as index 0 whatever its host index.
CMD ["prunebench", "worker", "--device", "0"]
