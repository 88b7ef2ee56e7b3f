# One entry point for people and CI. `make demo` and `make test` are the README's two commands.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_LEVEL ?= WARNING
export PREFECT_SERVER_LOGGING_LEVEL ?= WARNING
export DASK_LOGGING__DISTRIBUTED ?= warning
# The temporary Prefect server each stage starts: 20 s (the default) is too short on a loaded machine.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: install demo test test-fast lint typecheck check oracle check-corpus bench clean \
	ablation-wen2021 ablation-cmpc ablation-bipseudo

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install the project with its dev tools

demo: install  ## run the whole pipeline (dvc repro) on the default synthetic corpus
	python -m stages.run dvc repro
	python -m pipeline.evaluate.headline

test: install  ## the whole test suite, end-to-end test included, one test file per core at a time
	python -m pytest -n auto --dist loadfile --no-loadscope-reorder

test-fast: install  ## unit tests only
	python -m pytest -m "not slow and not e2e"

lint: install
	ruff check pipeline stages tests benchmarks
	ruff format --check pipeline stages tests benchmarks

typecheck: install
	mypy

check: lint typecheck test  ## everything CI and the pre-commit hook run

ABLATIONS := ablation-wen2021 ablation-cmpc ablation-bipseudo
$(ABLATIONS): ablation-%: install  ## a paper's ablation (ablations.yaml) as DVC experiments, then its report section (after make demo)
	python -m stages.run python -m pipeline.ablate run $*
	python -m stages.run dvc repro report

oracle: install  ## the oracle stage's 1:2 matching accuracy on unseen identities (after make demo)
	python -m pipeline.evaluate.oracle

check-corpus: install  ## MTCNN one-face rate and VAD speech fraction on the generated corpus
	python -m pipeline.synth.check data/synth

bench: install  ## preprocessing throughput vs the bare decode+detect loop (after make demo)
	python -m benchmarks.preprocess

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache
