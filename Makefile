# The two commands of the README:
#   make run    set up the environment, then run the whole pipeline on the embedded synthetic dataset
#   make test   set up the environment, then run the whole test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
PREFECT_PORT ?= 4200

.PHONY: setup run compare serve test lint bench
setup:
	@bash scripts/setup.sh $(VENV)

run: setup
	$(PY) -m flows.pipeline

compare: setup
	$(PY) -m flows.pipeline --compare

# a Prefect server on 127.0.0.1:$(PREFECT_PORT) and the scheduled retraining deployment (flows/retrain.py)
serve: setup
	$(PY) -m flows.retrain serve --start-server --port $(PREFECT_PORT)

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

bench: setup
	$(PY) benchmarks/synth_throughput.py
	$(PY) benchmarks/training.py
