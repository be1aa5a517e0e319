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

.PHONY: install demo test test-fast bench lock clean

# PaddleSlim 2.6.0's metadata pins opencv-python==4.6.0.66 and swig, which it does
# not need, so it is installed with --no-deps; its real imports are in the runtime extra.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[runtime,cpu,operator,test]'
	$(BIN)/python -m pip install --quiet --no-deps 'paddleslim==$(PADDLESLIM_VERSION)'
	# The real Helm library for chart tests; it declares Python >= 3.12, its lint/install work on 3.11.
	$(BIN)/python -m pip install --quiet --ignore-requires-python 'helm-sdkpy==0.1.32'
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

demo: install
	$(BIN)/rtdetr-edge demo

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

bench: install
	$(BIN)/rtdetr-edge bench

# Regenerate the images' exact pins (requirements/*.txt) after changing pyproject.toml.
lock: install
	$(BIN)/python requirements/lock.py

clean:
	rm -rf $(VENV) .venv-scan .rtdetr-edge .pytest_cache
