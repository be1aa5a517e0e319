# rtdetr-edge images (named targets):
#   operator     slim, no Paddle: the kopf control plane            docker build --target operator .
#   runtime-cpu  Paddle 2.6.2 CPU (oneDNN) + PaddleSlim: Jobs and serving on CPU nodes
#   runtime-gpu  CUDA 11.8 + cuDNN 8.6 + TensorRT 8.5.3 + paddlepaddle-gpu 2.6.2 (the combination
#                that wheel was built with): quantize Jobs and TensorRT serving on GPU nodes
#   exporter     runtime-gpu + PaddleDetection at a pinned commit, for source.checkpoint exports
# Versions shared with the Python project are checked by tests/test_packaging.py.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

# The project's files, copied once and shared by every image.
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY requirements/ /src/requirements/
COPY runtime/ /src/runtime/
COPY operator/ /src/operator/
COPY configs/ /src/configs/

# What each image runs, and nothing else (tests/test_packaging.py runs these two commands on a
# copy of the tree and imports the operator / runs the runtime CLI from what is left).
# The operator image: the API and the modules the operator imports (oci.py and model_files.py: it
# validates oci:// references), no data plane.
FROM ${PYTHON_IMAGE} AS source-operator
COPY --from=source /src/ /src/
WORKDIR /src
RUN find runtime/rtdetr_edge -mindepth 1 -maxdepth 1 -not -name __init__.py -not -name py.typed -not -name api -not -name resource.py -not -name storage.py -not -name files.py -not -name errors.py -not -name progress.py -not -name cpu_isa.py -not -name gate.py -not -name oci.py -not -name model_files.py -exec rm -rf {} +

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

# What both runtime images need beside Python: libgomp, the OpenMP runtime Paddle's libraries
# link against (CPU and GPU builds alike).
FROM python-base AS paddle-base
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
    && rm -rf /var/lib/apt/lists/*

FROM paddle-base AS runtime-cpu
ARG PADDLESLIM_VERSION=2.6.0
ARG PIP_INDEX_URL=https://pypi.org/simple
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

# The GPU runtime on the same Debian base, with NVIDIA's libraries from their PyPI wheels (no
# NVIDIA base image or apt repository). PyPI's paddlepaddle-gpu 2.6.2 (cp311) is built for
# CUDA 11.8 and cuDNN 8.6.0 (paddle.version.cuda(), .cudnn()) and TensorRT 8.5
# (paddle.inference.get_trt_compile_version()); RT-DETR's grid_sample needs TensorRT >= 8.5.1.
# Paddle dlopens each library by an unversioned name: rtdetr_edge.cuda_libraries links them
# under /opt/cuda/lib, and `rtdetr-edge gpu-libraries` checks them without a GPU (the image
# tests run it). The driver (libcuda.so) is the node's, mounted by the NVIDIA container toolkit.
FROM paddle-base AS runtime-gpu
ARG PADDLE_VERSION=2.6.2
ARG PADDLESLIM_VERSION=2.6.0
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG CUDA_RUNTIME_VERSION=11.8.89
ARG CUBLAS_VERSION=11.11.3.6
ARG CUDNN_VERSION=8.6.0.163
ARG CURAND_VERSION=10.3.0.86
ARG CUSOLVER_VERSION=11.4.1.48
ARG CUSPARSE_VERSION=11.7.5.86
ARG CUFFT_VERSION=10.9.0.58
# TensorRT 8.5.3's wheels carry Python bindings for CPython <= 3.10 only; Paddle loads only its
# libraries, which do not depend on Python: they are taken from the wheel, checked by its hash.
ARG TENSORRT_VERSION=8.5.3.1
ARG TENSORRT_WHEEL_SHA256=00375391073e51c1d662cc116f5472a921f27d75bb617c0195b3479633c625f3
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/opt/cuda/lib
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN --mount=type=bind,from=source-runtime,source=/src/requirements,target=/tmp/requirements \
    --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && pip install --no-cache-dir --requirement /tmp/requirements/runtime-gpu.txt "paddlepaddle-gpu==${PADDLE_VERSION}" \
        "nvidia-cuda-runtime-cu11==${CUDA_RUNTIME_VERSION}" "nvidia-cublas-cu11==${CUBLAS_VERSION}" \
        "nvidia-cudnn-cu11==${CUDNN_VERSION}" "nvidia-curand-cu11==${CURAND_VERSION}" \
        "nvidia-cusolver-cu11==${CUSOLVER_VERSION}" "nvidia-cusparse-cu11==${CUSPARSE_VERSION}" \
        "nvidia-cufft-cu11==${CUFFT_VERSION}" \
    && pip install --no-cache-dir --no-deps "paddleslim==${PADDLESLIM_VERSION}" \
    && pip download --no-cache-dir --no-deps --only-binary=:all: --python-version 3.10 \
        --platform manylinux_2_17_x86_64 --dest /tmp/tensorrt "tensorrt==${TENSORRT_VERSION}" \
    && echo "${TENSORRT_WHEEL_SHA256}  $(ls /tmp/tensorrt/tensorrt-*.whl)" | sha256sum --check --strict - \
    && python -c "import sys, zipfile; archive = zipfile.ZipFile(sys.argv[1]); \
[archive.extract(n, '/opt') for n in archive.namelist() if n.startswith('tensorrt/lib')]" /tmp/tensorrt/tensorrt-*.whl \
    && rm -rf /tmp/tensorrt
COPY --from=source-runtime /src/configs/ ./configs/
RUN --mount=type=bind,from=source-runtime,source=/src,target=/tmp/src,rw \
    --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && pip install --no-cache-dir --no-deps /tmp/src \
    && python -m rtdetr_edge.cuda_libraries
USER 10001:10001
ENTRYPOINT ["rtdetr-edge"]

FROM runtime-gpu AS exporter
# PaddleDetection's RT-DETR export (tools/export_model.py ... trt=True). The PyPI `paddledet`
# predates RT-DETR and cannot install, so the source comes from git at a pinned commit, which
# BuildKit checks (--checksum: the build fails if the fetched commit is not this one). The commit
# is develop of 2024-10-18, the tree whose RT-DETR export was measured on Paddle 2.6.2.
ARG PADDLEDETECTION_COMMIT=666f597fd00d3157e84dd9fb2dd3f40bf9918ebc
USER 0
ADD --checksum=${PADDLEDETECTION_COMMIT} https://github.com/PaddlePaddle/PaddleDetection.git#${PADDLEDETECTION_COMMIT} /opt/PaddleDetection
RUN --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && pip install --no-cache-dir "pandas==2.2.3" "shapely==2.0.6" "typeguard==4.4.1" \
    && pip install --no-cache-dir --no-deps "imgaug==0.4.0"
WORKDIR /opt/PaddleDetection
USER 10001:10001
ENTRYPOINT ["python", "tools/export_model.py"]
