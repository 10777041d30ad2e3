#!/bin/bash
# EMR bootstrap action: runs on every node, before YARN and Spark start.
#
# Parity rule (docs/spark-jobs.md, "Where the jobs run"): the jobs' Python workers run Python 3.11 with the
# very versions the tests ran, locally and on EMR 7.x (Spark 3.5). EMR's default python3 is 3.9 and
# its TensorFlow application is a different build, so we install our own pinned closure
# (requirements.lock, made by `make lock`) for python3.11 and point PYSPARK_PYTHON at it (the job
# flow's spark-env).
#
# Usage (bootstrap action args):
#   emr_bootstrap.sh s3://<bucket>/code/<version>/requirements.lock [s3://<bucket>/wheels/<lock sha256>/]
# With the second argument the wheels come from the bucket (--no-index: no internet needed, a
# private subnet with an S3 gateway endpoint is enough); without it, from PyPI (the subnet needs a
# NAT).
set -euo pipefail

LOCK_URI="${1:?usage: emr_bootstrap.sh s3://bucket/code/<version>/requirements.lock [s3://bucket/wheels/<sha>/]}"
WHEELS_URI="${2:-}"
PYTHON=python3.11

# Amazon Linux 2023 (EMR 7.x) ships python3.11 without pip: test for pip, not for the interpreter.
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  sudo dnf install -y -q python3.11 python3.11-pip
fi

workdir="$(mktemp -d)"
aws s3 cp --only-show-errors "$LOCK_URI" "$workdir/requirements.lock"
if [ -n "$WHEELS_URI" ]; then
  aws s3 cp --only-show-errors --recursive "$WHEELS_URI" "$workdir/wheels"
  sudo "$PYTHON" -m pip install --quiet --no-cache-dir --no-index --find-links "$workdir/wheels" \
    -r "$workdir/requirements.lock"
else
  # --only-binary: never compile TensorFlow or NumPy on a cluster node.
  sudo "$PYTHON" -m pip install --quiet --no-cache-dir --only-binary=:all: -r "$workdir/requirements.lock"
fi
"$PYTHON" -c "import ${FRUITS_BOOTSTRAP_CHECK:-tensorflow, PIL, pyarrow, pandas}; print('fruits bootstrap ok')"
rm -rf "$workdir"
