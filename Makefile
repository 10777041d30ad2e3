# One entry point for people and CI. Every target installs what it needs first (idempotent).
#   make run    the whole DAG on demo images, no cloud (README's first command)
#   make test   the test suite (README's second command; .ci/run calls it)
#   make test-fast  the tests that need no Spark, no browser, no model and no whole-DAG run (~2 min)
#   make lint   ruff (lint and format check) and mypy, as CI runs them; make format applies ruff's fixes
#   make ui     Airflow's UI on this machine (no Docker): prints the URL and a login; Ctrl-C stops it
#   make bench  throughput of our features job vs the seed notebook vs raw TensorFlow and ONNX Runtime loops
#   make bench-sizes   image size (224..128) against images/s and feature quality on the shared sample
#   make bench-precision  FP32 vs INT8 at 224 and 160 px on the shared sample: images/s, memory, 1-NN, time by part
#   make bench-pca     PCA of 250,000 synthetic feature vectors under the default 1 GB driver heap
#   make bench-memory  bench-pca, plus the features job's peak memory at 10,000 vs 50,000 images
#   make bench-index   fruits similar's vector index: usearch vs faiss-cpu on 200,000 vectors of k=100
#   make bench-growth  the PCA step day by day on a growing synthetic lake (DAYS=10 PHOTOS=20000): grows with the day
#   make bench-batches 1,000 daily batches: search p50/p95, files, ingest's held-photo read, requests a day
#   make check-days    the whole DAG twelve days running on held-out photos: files a day and a query read
#   make bench-ingest  20,000 photos to moto's S3 server at +25 ms a request: one object each vs shards
#   make serverless-image  the EMR Serverless workers' image, built and pushed to the stack's ECR repository
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(BIN))/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

# make run: the landing folder (demo photos are generated there when it does not exist) and weights
LANDING ?= data/landing
# Empty: what a local run of the DAG defaults to (fruits.config.settings.shared_weights: the shared genuine
# weights when present), passed explicitly (a Variable lookup would log an ERROR on Airflow 3.1);
# without them, random weights, said so, so a fresh machine with no internet still runs.
WEIGHTS ?=
DEFAULT_WEIGHTS = $(BIN)/python -c 'from fruits.config.settings import shared_weights; print(shared_weights() or "random")'
# Airflow's embedded default: SQLite and config in ./airflow_home, this repository's dags/ and plugins/
# Three warnings Airflow 3.1 itself prints on every `dags test`, harmless here and not ours to fix:
# the CLI's optional graphviz (no graph rendering wanted), and two deprecations inside Airflow.
AIRFLOW_QUIET := ignore:Could not import graphviz:UserWarning,ignore:'HTTP_422_UNPROCESSABLE_ENTITY' is deprecated:DeprecationWarning,ignore:The \`airflow.operators.branch.BaseBranchOperator\` attribute is deprecated:Warning
AIRFLOW := AIRFLOW_HOME=$(CURDIR)/airflow_home AIRFLOW__CORE__LOAD_EXAMPLES=False PYTHONWARNINGS="$(AIRFLOW_QUIET)" \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins $(BIN)/airflow

.PHONY: install run test test-fast lint format ui bench bench-sizes bench-precision bench-pca bench-memory bench-index bench-growth bench-ingest bench-batches check-days lock wheelhouse serverless-image clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "need Python 3.11 as '$(PYTHON)' (EMR parity; see README)"; exit 1; }
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "need Python 3.11, got " + sys.version'
	@command -v java >/dev/null || { echo "need Java 17 for Spark (apt-get install openjdk-17-jre-headless)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==0.13.9

# The venv is requirements-dev.lock exactly (make lock writes it; tests/test_locks.py checks the venv
# against it): the same ~200 versions on every machine, not a fresh resolution of requirements*.txt.
# `uv pip install`, not `uv pip sync`: sync would remove uv and pip, which the rule above put there.
$(VENV)/.installed: $(BIN)/python requirements-dev.lock pyproject.toml
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements-dev.lock
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
	@[ -d "$(LANDING)" ] || $(BIN)/fruits demo "$(LANDING)"
	$(AIRFLOW) db migrate > /dev/null
	@W="$(WEIGHTS)"; [ -n "$$W" ] || W=$$($(DEFAULT_WEIGHTS)); \
	[ "$$W" != random ] || echo "NOTE: no ../shared weights here: running with --weights random (try WEIGHTS=imagenet)"; \
	set -x; $(AIRFLOW) dags test fruits_pipeline -c "{\"backend\": \"local\", \"landing_dir\": \"$(abspath $(LANDING))\", \"weights\": \"$$W\"}"
	@echo; $(BIN)/fruits where

# Both cores (pytest-xdist), a whole test module per worker so that its fixtures (a DAG run, a lake)
# are built once, handed out in collection order (conftest.py puts the costly modules first; xdist's
# default would order them by their count of tests); the slowest tests are listed at the end.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: install
	$(PYTEST) --durations=15

test-fast: install
	$(PYTEST) -m "not spark and not ui and not model and not dag"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

ui: install
	$(BIN)/python -m fruits.tools.local_airflow

bench: install
	$(BIN)/python bench/bench_features.py

bench-sizes: install
	$(BIN)/python bench/image_sizes.py

bench-precision: install
	$(BIN)/python bench/precision.py

bench-pca: install
	$(BIN)/python bench/bench_memory.py --pca-rows 250000

bench-memory: install
	$(BIN)/python bench/bench_memory.py --pca-rows 250000 --features-images 10000,50000

bench-index: install
	$(BIN)/python bench/bench_index.py --rows 200000 --dim 100

# DAYS / PHOTOS: a quick run, e.g. make bench-growth DAYS=4 PHOTOS=2000 (GROWTH_NEW_CLASSES_DAY=3)
DAYS ?= 10
PHOTOS ?= 20000
bench-growth: install
	$(BIN)/python bench/growth.py --days $(DAYS) --photos $(PHOTOS)

# A server in the loop (moto's, on this machine): never part of make test.
bench-batches: install
	$(BIN)/python bench/batches.py --batches 1000

check-days: install
	$(BIN)/python bench/days.py --days 12

bench-ingest: install
	$(BIN)/python bench/bench_ingest.py --photos 20000 --latency-ms 25 --features-photos 1000

# The locks, all from the versions installed here, so that what runs elsewhere is what the tests ran:
#   spark_jobs/requirements.lock  the jobs' closure for EMR (Linux x86_64, CPython 3.11; tests/test_emr_parity.py)
#   requirements-dev.lock         requirements-dev.txt's closure: what `make install` installs (tests/test_locks.py)
#   requirements.lock             requirements.txt's closure, no test tools: what the Airflow image installs
# After editing a requirements*.txt pin: `make lock` installs the requirements first (uv keeps every
# installed version that still fits), then freezes the venv and compiles the three locks against it
# (into build/ first: a failed compile leaves every lock as it was).
# The Airflow locks target the venv's own CPython 3.11.x (some wheels need a minimum patch release).
AIRFLOW_LOCK = --python $(BIN)/python --python-platform x86_64-manylinux_2_28 --no-header --quiet
lock: install
	@mkdir -p build/lock/spark_jobs
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements-dev.txt
	$(BIN)/uv pip freeze --python $(BIN)/python | grep -v '^-e ' > build/freeze.txt
	{ echo "# The Spark jobs' whole dependency closure for EMR 7.x nodes (Linux x86_64, CPython 3.11): what"; \
	  echo "# the bootstrap installs. Generated by 'make lock' from requirements.txt at the versions installed"; \
	  echo "# locally (tests/test_emr_parity.py checks both agree); do not edit by hand."; \
	  $(BIN)/uv pip compile spark_jobs/requirements.txt -c build/freeze.txt --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --no-header --quiet; } > build/lock/spark_jobs/requirements.lock
	{ echo "# The whole dependency closure of requirements-dev.txt (Airflow side, Spark jobs, test tools) for"; \
	  echo "# Linux x86_64, CPython 3.11: what 'make install' installs into .venv. Generated by 'make lock' at"; \
	  echo "# the versions installed locally (tests/test_locks.py checks both agree); do not edit by hand."; \
	  $(BIN)/uv pip compile requirements-dev.txt -c build/freeze.txt $(AIRFLOW_LOCK); } > build/lock/requirements-dev.lock
	{ echo "# The whole dependency closure of requirements.txt (Airflow side and Spark jobs, no test tools) for"; \
	  echo "# Linux x86_64, CPython 3.11: what the Airflow image installs (docker/airflow/Dockerfile). Generated"; \
	  echo "# by 'make lock' with requirements-dev.lock's constraints, so both pin the same versions"; \
	  echo "# (tests/test_locks.py); do not edit by hand."; \
	  $(BIN)/uv pip compile requirements.txt -c build/freeze.txt $(AIRFLOW_LOCK); } > build/lock/requirements.lock
	cp build/lock/spark_jobs/requirements.lock spark_jobs/requirements.lock
	cp build/lock/requirements-dev.lock build/lock/requirements.lock .

# Wheels of that closure for clusters in a subnet without internet: set the setting `wheelhouse`
# (FRUITS_WHEELHOUSE) to this folder and stage_code uploads it (docs/aws.md).
WHEELHOUSE ?= build/wheelhouse
wheelhouse: install
	$(BIN)/python -m pip download --quiet --only-binary=:all: --platform manylinux2014_x86_64 \
		--platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp \
		-r spark_jobs/requirements.lock -d $(WHEELHOUSE)

# The EMR Serverless workers' image (backend emr_serverless; docs/aws.md): built for
# linux/amd64 from the pinned base, tagged by the digest of its Dockerfile and the jobs' lock, pushed to
# the stack's ECR repository (its output ServerlessImageRepositoryUri).
SERVERLESS_REPOSITORY ?=
SERVERLESS_BASE_TAG ?=
serverless-image: install
	docker/emr-serverless/build-and-push.sh "$(SERVERLESS_REPOSITORY)" "$(SERVERLESS_BASE_TAG)" \
		"$$($(BIN)/python -m fruits.backends.emr_serverless.image)"

clean:
	rm -rf data/lake data/landing airflow_home artifacts
