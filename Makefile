# Two entry points: `make demo` (the whole EGT recipe on the embedded tiny judge)
# and `make test` (the test suite). Both create .venv and install egt first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision are pinned to the releases this project is tested with; pip
# installs them before egt so that the resolver does not pick another build.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_ARGS ?=

.PHONY: install demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/egt demo --output runs/demo $(DEMO_ARGS)

test: install
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs
