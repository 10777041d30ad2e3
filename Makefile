# One entry point for people and CI. Every target installs what it needs first (idempotent).
#   make run    the whole DAG on demo images, no cloud (README's first command)
#   make test   the test suite (README's second command; .ci/run calls it)
#   make bench  throughput of our features job vs the seed notebook vs raw TensorFlow
#   make bench-pca     PCA of 250,000 synthetic feature vectors under the default 1 GB driver heap
#   make bench-memory  bench-pca, plus the features job's peak memory at 10,000 vs 50,000 images
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(BIN))/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

# make run: the landing folder (demo photos are generated there when it does not exist) and weights
LANDING ?= data/landing
SHARED_WEIGHTS := $(abspath ../shared/models/mobilenet_v2_1.0_224_imagenet_no_top.weights.h5)
WEIGHTS ?= $(if $(wildcard $(SHARED_WEIGHTS)),$(SHARED_WEIGHTS),random)
# Airflow's embedded default: SQLite and config in ./airflow_home, this repository's dags/ and plugins/
AIRFLOW := AIRFLOW_HOME=$(CURDIR)/airflow_home AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins $(BIN)/airflow

.PHONY: install run test bench bench-pca bench-memory clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "need Python 3.11 as '$(PYTHON)' (EMR parity; see README)"; exit 1; }
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "need Python 3.11, got " + sys.version'
	@command -v java >/dev/null || { echo "need Java 17 for Spark (apt-get install openjdk-17-jre-headless)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==0.13.9

$(VENV)/.installed: $(BIN)/python requirements.txt requirements-dev.txt spark_jobs/requirements.txt pyproject.toml
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements-dev.txt
	@# Our two packages (fruits, fruits_jobs), editable: importable from anywhere, no PYTHONPATH.
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@# Byte-compile once: with PYTHONDONTWRITEBYTECODE set, every Spark worker and Airflow task
	@# would otherwise recompile TensorFlow's sources (an 8 s import instead of 4 s).
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib/python3.11/site-packages > /dev/null || true
	@touch $@

# The IaC checkers (cfn-lint, checkov, parliament) in a venv of their own: checkov pins versions of
# boto3/botocore/packaging that would break Airflow and moto in $(VENV).
IAC_VENV := .venv-iac
$(IAC_VENV)/.installed: $(BIN)/python requirements-iac.txt
	$(PYTHON) -m venv $(IAC_VENV)
	$(BIN)/uv pip install -q --python $(IAC_VENV)/bin/python -r requirements-iac.txt
	@touch $@

install: $(VENV)/.installed $(IAC_VENV)/.installed

run: install
	@[ -d "$(LANDING)" ] || $(BIN)/python -m fruits.demo_images "$(LANDING)"
	@[ "$(WEIGHTS)" != random ] || echo "NOTE: no ../shared weights here: running with --weights random (try WEIGHTS=imagenet)"
	$(AIRFLOW) db migrate > /dev/null
	$(AIRFLOW) dags test fruits_pipeline -c '{"backend": "local", "landing_dir": "$(abspath $(LANDING))", "weights": "$(WEIGHTS)"}'
	@echo; $(BIN)/python -m fruits.where

test: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/bench_features.py

bench-pca: install
	$(BIN)/python bench/bench_memory.py --pca-rows 250000

bench-memory: install
	$(BIN)/python bench/bench_memory.py --pca-rows 250000 --features-images 10000,50000

clean:
	rm -rf data/lake data/landing airflow_home artifacts
