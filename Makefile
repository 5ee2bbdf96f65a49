# climdl: the two commands of the README do all the set-up.
#   make demo   create .venv, install, run the main job on the embedded sample, print where the outputs are
#   make test   create .venv, install, run the test suite
#
# TORCH_SPEC: the torch the set-up installs when the environment has none. The default pins the
# CPU build that these machines serve locally; on a GPU machine either pre-install your CUDA torch
# in .venv, or reuse a system one with `make VENV_FLAGS=--system-site-packages ...`: an importable
# torch is never replaced.
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= demo_out
PY := $(VENV)/bin/python
STAMP := $(VENV)/.climdl-installed

.PHONY: all install demo test test-all lint typecheck clean

all: test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	@PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh "$(DEMO_DIR)"

test: $(STAMP)
	$(PY) -m pytest -m "not gpu" -p no:cacheprovider --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy climdl

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
