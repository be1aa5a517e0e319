# Two commands do all set-up on a fresh machine (see README):
#   make demo   — install into .venv, build the tiny model, serve it, print a URL and a curl
#   make test   — install into .venv and run every test tier this machine can run
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/*.txt 2>/dev/null | sha256sum | cut -c1-16)

.PHONY: install demo test test-fast bench lint clean

# PaddleSlim 2.6.0's metadata pins opencv-python==4.6.0.66 and swig, which it does
# not need, so it is installed with --no-deps; its real imports are in the runtime extra.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[runtime,operator,test]'
	$(BIN)/python -m pip install --quiet --no-deps 'paddleslim==2.6.0'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/rtdetr-edge demo

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

bench: install
	$(BIN)/rtdetr-edge bench

clean:
	rm -rf $(VENV) .rtdetr-edge .pytest_cache
