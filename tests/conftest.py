"""Shared test fixtures: one local Spark session for the suite, and the optional shared data.

`../shared` (real Fruits-360 photos, genuine ImageNet weights) sits beside the checkout in CI;
tests that need it skip with a reason when it is absent, the rest still run.
"""

import logging
import os
import sys
from pathlib import Path

import pytest

# Airflow's isolation (a throwaway AIRFLOW_HOME, SQLite) and the DAG/AWS fixtures, for every test
# module: loaded here, before any test module can import Airflow.
pytest_plugins = ("airflow_fixtures",)

from fruits_jobs.layout import DEFAULT_WEIGHTS_FILE  # noqa: E402 (after Airflow's isolation, above)

REPO = Path(__file__).resolve().parents[1]

SHARED = Path(os.environ.get("FRUITS_SHARED_DIR", REPO.parent / "shared"))
SAMPLE_DIR = SHARED / "data" / "fruits-360-sample"
WEIGHTS_FILE = SHARED / "models" / DEFAULT_WEIGHTS_FILE

# What a test needs, by the fixtures it takes: marked so, even when its module forgets, so that
# `make test-fast` (-m "not spark and not ui and not model and not dag") leaves exactly those out.
NEEDS = {"spark": "spark", "sample_features": "spark", "weights_file": "model", "runnable_dag": "dag"}


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in NEEDS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


# py4j logs "Closing down clientserver connection" from __del__ at interpreter exit, after pytest
# closed the streams: a "Logging error" traceback below the summary line. Not a test outcome.
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real Fruits-360 sample not found at {SAMPLE_DIR} (set FRUITS_SHARED_DIR)")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def weights_file() -> Path:
    if not WEIGHTS_FILE.is_file():
        pytest.skip(f"ImageNet MobileNetV2 weights not found at {WEIGHTS_FILE} (set FRUITS_SHARED_DIR)")
    return WEIGHTS_FILE


@pytest.fixture(scope="session", autouse=True)
def job_environment():
    """What `make` exports for the jobs (Makefile), for the session only: restored at its end."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }.items():
            mp.setenv(name, os.environ.get(name, value))
        yield


@pytest.fixture(scope="session")
def spark():
    """One local Spark for the whole suite, configured like the features job configures its own."""
    from fruits_jobs.common import spark_session

    session = spark_session(
        "fruits-tests",
        {
            "spark.master": "local[2]",
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
        },
    )
    yield session
    session.stop()


def make_jpeg(path: Path, color=(200, 30, 40), size=(100, 100)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG")
    return path


@pytest.fixture(scope="session")
def sample_features(spark, sample_dir, weights_file, tmp_path_factory):
    """The real Fruits-360 sample through the real job with the genuine weights, once."""
    from fruits_jobs import commits, features

    out = tmp_path_factory.mktemp("sample")
    summary = features.run(
        spark,
        features.parse_args(
            [
                "--images",
                str(sample_dir),
                "--features",
                str(out / "features"),
                "--rejects",
                str(out / "rejects"),
                "--batch-id",
                "sample",
                "--weights",
                str(weights_file),
            ]
        ),
    )
    rows = commits.read_current(spark, str(out / "features"), ["sample"]).collect()
    return summary, rows, out
