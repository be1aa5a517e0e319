# rtdetr-edge images (named targets):
#   operator     slim, no Paddle: the kopf control plane            docker build --target operator .
#   runtime-cpu  Paddle 2.6.2 CPU (oneDNN) + PaddleSlim: Jobs and serving on CPU nodes
#   runtime-gpu  CUDA 11.8 + cuDNN 8.6 + TensorRT 8.5.3 + paddlepaddle-gpu 2.6.2 (the combination
#                that wheel was built with): quantize Jobs and TensorRT serving on GPU nodes
#   exporter     runtime-gpu + PaddleDetection at a pinned tag, for source.checkpoint exports
# Versions shared with the Python project are checked by tests/test_packaging.py.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04

# The project's files, copied once and shared by every image.
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY requirements/ /src/requirements/
COPY runtime/ /src/runtime/
COPY operator/ /src/operator/
COPY configs/ /src/configs/

# What each image runs, and nothing else (tests/test_packaging.py runs these two commands on a
# copy of the tree and imports the operator / runs the runtime CLI from what is left).
# The operator image: the API and the modules the operator imports, no data plane.
FROM ${PYTHON_IMAGE} AS source-operator
COPY --from=source /src/ /src/
WORKDIR /src
RUN find runtime/rtdetr_edge -mindepth 1 -maxdepth 1 -not -name __init__.py -not -name py.typed -not -name api -not -name resource.py -not -name storage.py -not -name files.py -not -name errors.py -not -name progress.py -not -name cpu_isa.py -not -name gate.py -exec rm -rf {} +

# The runtime images: data plane and pipeline, without the development tools (rtdetr_edge.dev)
# or the operator.
FROM ${PYTHON_IMAGE} AS source-runtime
COPY --from=source /src/ /src/
WORKDIR /src
RUN rm -rf runtime/rtdetr_edge/dev operator/rtdetr_operator

FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RTDETR_CONFIG_DIR=/opt/rtdetr-edge/configs
RUN groupadd --gid 10001 rtdetr \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin rtdetr
WORKDIR /opt/rtdetr-edge

# Every image installs exact pins from requirements/*.txt (make lock) in one layer, then the
# project --no-deps in the next, from its source stage mounted for the install only: a source
# change rebuilds that small layer alone, and the image keeps the installed package and the ACT
# defaults (configs/), not a second copy of the sources.
# Behind a TLS-intercepting proxy, or with a private index (build-arg PIP_INDEX_URL) signed by
# your own CA, pass the CA bundle as a build secret: --secret id=ca-bundle,src=<bundle.pem>
# (docker build and buildctl alike); it is used by pip during the build and never stored in a layer.
FROM python-base AS operator
ARG PIP_INDEX_URL=https://pypi.org/simple
COPY --from=source-operator /src/configs/ ./configs/
RUN --mount=type=bind,from=source-operator,source=/src/requirements,target=/tmp/requirements \
    --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && pip install --no-cache-dir --requirement /tmp/requirements/operator.txt
RUN --mount=type=bind,from=source-operator,source=/src,target=/tmp/src,rw \
    --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && pip install --no-cache-dir --no-deps /tmp/src
USER 10001:10001
ENTRYPOINT ["rtdetr-operator"]

FROM python-base AS runtime-cpu
ARG PADDLESLIM_VERSION=2.6.0
ARG PIP_INDEX_URL=https://pypi.org/simple
# libgomp: OpenMP runtime that Paddle's CPU kernels link against.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=source-runtime /src/configs/ ./configs/
# PaddleSlim's metadata pins opencv-python==4.6.0.66 and swig, which it does not use:
# install it without dependencies; its real imports are in the `runtime` extra.
RUN --mount=type=bind,from=source-runtime,source=/src/requirements,target=/tmp/requirements \
    --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && pip install --no-cache-dir --requirement /tmp/requirements/runtime-cpu.txt \
    && pip install --no-cache-dir --no-deps "paddleslim==${PADDLESLIM_VERSION}"
RUN --mount=type=bind,from=source-runtime,source=/src,target=/tmp/src,rw \
    --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && pip install --no-cache-dir --no-deps /tmp/src
USER 10001:10001
ENTRYPOINT ["rtdetr-edge"]

FROM ${CUDA_IMAGE} AS runtime-gpu
ARG PADDLE_VERSION=2.6.2
ARG PADDLESLIM_VERSION=2.6.0
ARG PYTHON_VERSION=3.11.10
ARG UV_VERSION=0.5.11
# paddlepaddle-gpu 2.6.2 is built against CUDA 11.8, cuDNN 8.6 and TensorRT 8.5.3;
# RT-DETR's grid_sample needs TensorRT >= 8.5.1.
ARG CUDNN_VERSION=8.6.0.163-1+cuda11.8
ARG TENSORRT_VERSION=8.5.3-1+cuda11.8
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RTDETR_CONFIG_DIR=/opt/rtdetr-edge/configs \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    PATH=/opt/venv/bin:${PATH}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends --allow-downgrades --allow-change-held-packages \
        "libcudnn8=${CUDNN_VERSION}" "libnvinfer8=${TENSORRT_VERSION}" "libnvinfer-plugin8=${TENSORRT_VERSION}" \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 rtdetr \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin rtdetr
# Ubuntu 22.04 ships Python 3.10; a pinned standalone CPython 3.11 (glibc 2.17-compatible) via uv.
COPY --from=ghcr.io/astral-sh/uv:0.5.11 /uv /usr/local/bin/uv
RUN uv python install "${PYTHON_VERSION}" && uv venv --python "${PYTHON_VERSION}" /opt/venv
WORKDIR /opt/rtdetr-edge
COPY --from=source-runtime /src/configs/ ./configs/
RUN --mount=type=bind,from=source-runtime,source=/src/requirements,target=/tmp/requirements \
    uv pip install --python /opt/venv --no-cache --requirement /tmp/requirements/runtime-gpu.txt "paddlepaddle-gpu==${PADDLE_VERSION}" \
    && uv pip install --python /opt/venv --no-cache --no-deps "paddleslim==${PADDLESLIM_VERSION}"
RUN --mount=type=bind,from=source-runtime,source=/src,target=/tmp/src,rw \
    uv pip install --python /opt/venv --no-cache --no-deps /tmp/src
USER 10001:10001
ENTRYPOINT ["rtdetr-edge"]

FROM runtime-gpu AS exporter
# PaddleDetection's RT-DETR export (tools/export_model.py ... trt=True). The PyPI `paddledet`
# predates RT-DETR and cannot install, so use the source at a pinned tag.
ARG PADDLEDETECTION_REF=v2.8.0
USER 0
ADD https://github.com/PaddlePaddle/PaddleDetection/archive/refs/tags/${PADDLEDETECTION_REF}.tar.gz /tmp/paddledetection.tar.gz
RUN mkdir -p /opt/PaddleDetection \
    && tar -xzf /tmp/paddledetection.tar.gz --strip-components=1 -C /opt/PaddleDetection \
    && rm /tmp/paddledetection.tar.gz \
    && uv pip install --python /opt/venv --no-cache "pandas==2.2.3" "shapely==2.0.6" "typeguard==4.4.1" \
    && uv pip install --python /opt/venv --no-cache --no-deps "imgaug==0.4.0"
WORKDIR /opt/PaddleDetection
USER 10001:10001
ENTRYPOINT ["python", "tools/export_model.py"]
