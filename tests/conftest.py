"""Shared test fixtures: one local Spark session for the suite, and the optional shared data.

`../shared` (real Fruits-360 photos, genuine ImageNet weights) sits beside the checkout in CI;
tests that need it skip with a reason when it is absent, the rest still run.
"""

import fcntl
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


# make test hands whole modules to its two workers (pytest-xdist --dist loadfile) in collection order,
# each to the first worker free: the costly kinds first, so that no long module starts last and runs alone.
COSTLIEST_FIRST = ("ui", "dag", "spark", "model")


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in NEEDS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
    rank: dict[str, int] = {}
    for item in items:
        kinds = [i for i, kind in enumerate(COSTLIEST_FIRST) if item.get_closest_marker(kind)]
        rank[item.module.__name__] = min(
            rank.get(item.module.__name__, len(COSTLIEST_FIRST)), *kinds, len(COSTLIEST_FIRST)
        )
    items.sort(key=lambda item: rank[item.module.__name__])  # stable: each module's tests stay in order


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


@contextmanager
def made_once(tmp_path_factory, name: str) -> Iterator[tuple[Path, bool]]:
    """A folder the whole test run shares, and whether it is made already: under pytest-xdist, its
    workers' (the first to need it makes it while the others wait on a lock); else the session's.
    The maker writes its files, then leaves; a folder a dead maker left half-made is made again."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    done = folder / ".made"
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        yield folder, done.is_file()
        done.touch()


@pytest.fixture(scope="session")
def sample_features(spark, sample_dir, weights_file, tmp_path_factory):
    """The real Fruits-360 sample through the real job with the genuine weights, once for the whole
    test run (readers only: the tests write their own outputs elsewhere)."""
    from fruits_jobs import commits, features

    with made_once(tmp_path_factory, "sample") as (out, made):
        if not made:
            argv = ["--images", str(sample_dir), "--features", str(out / "features"), "--rejects", str(out / "rejects")]
            argv += ["--batch-id", "sample", "--weights", str(weights_file)]
            summary = features.run(spark, features.parse_args(argv))
            (out / "summary.json").write_text(json.dumps(summary))
    summary = json.loads((out / "summary.json").read_text())  # as the job prints it: JSON
    rows = commits.read_current(spark, str(out / "features"), ["sample"]).collect()
    return summary, rows, out


@pytest.fixture(scope="session")
def random_export(tmp_path_factory) -> Path:
    """random weights' ONNX export at the jobs' default image size, named as the features job keeps it
    in a lake's models/, made once for the test run: a test's fresh lake starts with it (seed_models),
    so its first local run skips TensorFlow, as a lake's second run does (test_extract_features tests
    the making and the keeping)."""
    from fruits_jobs import extractors
    from fruits_jobs import model as mobilenet

    size = extractors.DEFAULT_IMAGE_SIZE
    name = mobilenet.onnx_cache_name(extractors.weights_name("random", size), size)
    with made_once(tmp_path_factory, "models") as (folder, made):
        if not made:
            (folder / name).write_bytes(mobilenet.export_onnx(mobilenet.load_model("random", size)).graph)
    return folder / name


def seed_models(lake: Path, export: Path) -> None:
    """A fresh lake with an export its jobs would make and keep (see random_export)."""
    (lake / "models").mkdir(parents=True, exist_ok=True)
    shutil.copy(export, lake / "models" / export.name)
