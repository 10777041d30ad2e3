# One entry point for people and CI. Every target installs what it needs first (idempotent).
#   make run    the whole DAG on demo images, no cloud (README's first command)
#   make test   the test suite (README's second command; .ci/run calls it)
#   make bench  throughput of our features job vs the seed notebook vs raw TensorFlow
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(BIN))/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install run test bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "need Python 3.11 as '$(PYTHON)' (EMR parity; see README)"; exit 1; }
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "need Python 3.11, got " + sys.version'
	@command -v java >/dev/null || { echo "need Java 17 for Spark (apt-get install openjdk-17-jre-headless)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==0.13.9

$(VENV)/.installed: $(BIN)/python requirements.txt requirements-dev.txt spark_jobs/requirements.txt
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements-dev.txt
	@touch $@

install: $(VENV)/.installed

run: install
	bash dags/run_local.sh

test: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/bench_features.py

clean:
	rm -rf data/lake data/landing airflow_home artifacts
