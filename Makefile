# Two entry points: `make demo` (the whole EGT recipe on the embedded tiny judge)
# and `make test` (the test suite). Both create .venv and install egt first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision are pinned to the releases this project is tested with (pinned in
# the same pip command as egt, so that the resolver does not pick another build).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# `pip install --no-compile` skips byte-compiling every installed module (~30 s, most of
# it torch files nothing imports); Python compiles a module the first time it is imported
# and keeps the .pyc, which PYTHONDONTWRITEBYTECODE would forbid — hence the unexport:
# without cached bytecode every test subprocess would recompile transformers (~8 s each).
unexport PYTHONDONTWRITEBYTECODE
# The suite runs on TEST_WORKERS pytest-xdist processes (one torch thread each).
TEST_WORKERS ?= 2
DEMO_ARGS ?=

.PHONY: install demo test test-heavy test-frameworks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --no-compile $(TORCH_PINS) -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/egt demo --output runs/demo $(DEMO_ARGS)

# `make test` is the suite a fresh clone runs in under 5 minutes; tests marked `heavy` (several processes,
# thousands of requests, load) run in `make test-heavy`, which CI (.ci/run) runs after it.
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not heavy" tests

test-heavy: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m heavy tests

# verl's and OpenRLHF's own reward clients calling `egt serve` (tests/judge/test_serve_frameworks.py). Each
# framework gets a venv of its own: their pins conflict with each other and with egt's (verl: transformers<5.11;
# OpenRLHF: ==5.15 and flash-attn, which needs CUDA to build, hence --no-deps plus what its client imports).
# The server runs in .venv. Point VERL_VENV / OPENRLHF_VENV at existing venvs to skip building them.
VERL_VENV ?= .venv-verl
OPENRLHF_VENV ?= .venv-openrlhf
FRAMEWORK_TORCH := torch==2.13.0

$(VERL_VENV)/bin/pytest:
	$(PYTHON) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/pip install -q --no-compile $(FRAMEWORK_TORCH) verl==0.9.1 pytest

$(OPENRLHF_VENV)/bin/pytest:
	$(PYTHON) -m venv $(OPENRLHF_VENV)
	$(OPENRLHF_VENV)/bin/pip install -q --no-compile $(FRAMEWORK_TORCH) transformers==5.15.0 aiohttp pylatexenc pytest
	$(OPENRLHF_VENV)/bin/pip install -q --no-compile --no-deps openrlhf==0.11.2

test-frameworks: install $(VERL_VENV)/bin/pytest $(OPENRLHF_VENV)/bin/pytest
	EGT_PYTHON=$(abspath $(BIN)/python) $(VERL_VENV)/bin/python -m pytest -q -p no:cacheprovider -k verl tests/judge/test_serve_frameworks.py
	EGT_PYTHON=$(abspath $(BIN)/python) $(OPENRLHF_VENV)/bin/python -m pytest -q -p no:cacheprovider -k openrlhf tests/judge/test_serve_frameworks.py

clean:
	rm -rf $(VENV) $(VERL_VENV) $(OPENRLHF_VENV) runs
