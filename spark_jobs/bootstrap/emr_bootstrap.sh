#!/bin/bash
# EMR bootstrap action: runs on every node, before YARN and Spark start.
#
# Parity rule (README, "Where the jobs run"): the jobs' Python workers run Python 3.11 with the
# very pins of spark_jobs/requirements.txt, locally and on EMR 7.x (Spark 3.5). EMR's default
# python3 is 3.9 and its TensorFlow application is a different build, so we install our own
# pinned set for python3.11 and point PYSPARK_PYTHON at it (the job flow's spark-env).
#
# Usage (bootstrap action args): emr_bootstrap.sh s3://<bucket>/code/<version>/requirements.txt
set -euo pipefail

REQUIREMENTS_URI="${1:?usage: emr_bootstrap.sh s3://bucket/code/<version>/requirements.txt}"
PYTHON=python3.11

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  # Amazon Linux 2023 (EMR 7.x) packages Python 3.11 alongside the system 3.9.
  sudo dnf install -y -q python3.11 python3.11-pip python3.11-devel
fi

workdir="$(mktemp -d)"
aws s3 cp --only-show-errors "$REQUIREMENTS_URI" "$workdir/requirements.txt"
sudo "$PYTHON" -m pip install --quiet --no-cache-dir --upgrade pip
# --only-binary: never compile TensorFlow or NumPy on a cluster node.
sudo "$PYTHON" -m pip install --quiet --no-cache-dir --only-binary=:all: -r "$workdir/requirements.txt"
"$PYTHON" -c "import tensorflow, PIL, pyarrow, pandas; print('fruits bootstrap ok: tensorflow', tensorflow.__version__)"
rm -rf "$workdir"
