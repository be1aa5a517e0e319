# Two commands do all set-up on a fresh machine (see README):
#   make demo   — install into .venv, run the sample RTDETRModel locally (quantize, evaluate,
#                 gate, warm up) and serve it, printing detections, a URL and a curl
#   make test   — install into .venv and run every test tier this machine can run
PYTHON ?= python3.11
# Shared with the Dockerfile's ARG PADDLESLIM_VERSION (tests/test_packaging.py checks they agree).
PADDLESLIM_VERSION := 2.6.0
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/*.txt 2>/dev/null | sha256sum | cut -c1-16)

.PHONY: install system-packages cluster-tools cluster demo images push test test-fast bench bench-cpu lock crd proto clean

# PaddleSlim 2.6.0's metadata pins opencv-python==4.6.0.66 and swig, which it does
# not need, so it is installed with --no-deps; its real imports are in the runtime extra.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[runtime,cpu,operator,test]'
	$(BIN)/python -m pip install --quiet --no-deps 'paddleslim==$(PADDLESLIM_VERSION)'
	rm -f $(VENV)/.installed-*
	touch $@

# checkov (the chart's security scan) lives in its own venv: it would downgrade
# packages the project pins (packaging, python-dateutil, ...).
SCAN_STAMP := .venv-scan/.installed-checkov-3.3.30
$(SCAN_STAMP):
	test -x .venv-scan/bin/python || $(PYTHON) -m venv .venv-scan || python3 -m venv .venv-scan
	.venv-scan/bin/python -m pip install --quiet 'checkov==3.3.30'
	touch $@

install: $(STAMP) $(SCAN_STAMP)

# The real control plane for the operator tests (etcd, kube-apiserver, controller-manager,
# scheduler, kwok), the helm CLI, Flux's source/kustomize controllers and gopher-lua (Argo CD's
# Lua engine), built with Go from the pins in tests/cluster/go/*/go.mod into
# ~/.cache/rtdetr-edge/cluster (once per machine: ~18 min on 2 cores; then seconds).
cluster-tools: install system-packages
	$(BIN)/python -m tests.cluster.build

# Debian's packages the tests need, installed as root (elsewhere the image and cluster tests say
# why they skip): runc (BuildKit's worker and the image tests run containers with it),
# mmdebstrap (the images' base, made from Debian's packages: Docker Hub is out of reach here),
# shellcheck (actionlint runs it on the release workflow's scripts), gcc with libc6-dev (the test
# node's pause image, a static build of Kubernetes' pause.c), libseccomp-dev (the test node's
# runc, built with cgo and seccomp), nftables and conntrack (the test node's kube-proxy).
SYSTEM_PACKAGES := runc mmdebstrap shellcheck gcc libc6-dev libseccomp-dev nftables conntrack
system-packages:
	@missing=""; for package in $(SYSTEM_PACKAGES); do 		dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" || command -v $$package >/dev/null || missing="$$missing $$package"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "note:$$missing not installed (needs root and apt): the image and cluster tests will be skipped"; fi

# A real cluster on this machine until Ctrl-C (prints the KUBECONFIG to use). Needs root
# (pod network namespaces) and Go.
cluster: cluster-tools
	$(BIN)/python -m tests.cluster.node

demo: install
	$(BIN)/rtdetr-edge demo

# The operator, runtime-cpu and runtime-gpu images, built from this checkout by BuildKit (as root,
# like the image tests) into a registry on loopback; `make push REGISTRY=host/path` also copies
# them, with their digests, and the chart there (log in first: `crane auth login`, `helm registry
# login`; INSECURE=1 for a plain-HTTP registry; SIGN_KEY=cosign.key signs what was pushed and
# attests each image's SBOM, COSIGN_PASSWORD in the environment). The digests printed are what
# values.yaml can pin.
images: cluster-tools
	$(BIN)/python -m tests.cluster.images

push: cluster-tools
	@test -n "$(REGISTRY)" || (echo "usage: make push REGISTRY=host[:port]/path [INSECURE=1] [SIGN_KEY=cosign.key]"; exit 2)
	$(BIN)/python -m tests.cluster.images --push $(REGISTRY) $(if $(INSECURE),--insecure) $(if $(SIGN_KEY),--sign-key $(SIGN_KEY))

test: install cluster-tools
	$(BIN)/python -m pytest

test-fast: install cluster-tools
	$(BIN)/python -m pytest -m "not slow"

bench: install
	$(BIN)/rtdetr-edge bench

# CPU INT8 vs every FP32 path (Paddle, ONNX Runtime, OpenVINO) on this CPU, plus each INT8 variant's mAP.
BENCH_STAMP := $(VENV)/.installed-bench-openvino-2026.4.1-nncf-3.4.0
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

bench-cpu: $(BENCH_STAMP)
	$(BIN)/rtdetr-edge bench-cpu

# Regenerate the images' exact pins (requirements/*.txt) after changing pyproject.toml.
lock: install
	$(BIN)/python requirements/lock.py

# Regenerate the CRD (crds/ and the chart's copy) from the typed API in runtime/rtdetr_edge/api/.
crd: install
	$(BIN)/python -m rtdetr_edge.api.crd

# Recompile the Open Inference Protocol's gRPC descriptor set from its .proto (runtime/rtdetr_edge/server/proto/).
proto: install
	$(BIN)/python -m rtdetr_edge.dev.grpc_proto

clean:
	rm -rf $(VENV) .venv-scan .rtdetr-edge .pytest_cache
