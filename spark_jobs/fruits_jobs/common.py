"""What both jobs share: the Spark session, shipping this package, the closing JSON line."""

import argparse
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from fruits_jobs import contract, tables

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides real errors


class UsageError(ValueError):
    """Bad arguments: reported on stderr with exit code 2, before any work starts."""


def add_retention_argument(p: argparse.ArgumentParser) -> None:
    """--retention-hours, both jobs': how long the tables keep what a newer version replaced (vacuum)."""
    p.add_argument(
        "--retention-hours",
        type=float,
        default=tables.DEFAULT_RETENTION_HOURS,
        help="how long the tables keep replaced files, and the runs' side files (default "
        f"{tables.DEFAULT_RETENTION_HOURS}): the time-travel window; at least the longest job's timeout",
    )


def check_batch_id(batch_id: str) -> str:
    if not contract.is_valid_batch_id(batch_id):
        raise UsageError(f"--batch-id {batch_id!r}: use {contract.BATCH_ID_RULE}")
    return batch_id


def spark_session(app_name: str, conf: dict):
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    ship_package(spark)
    return spark


@contextmanager
def session_conf(spark, settings: dict[str, str]):
    """Spark SQL settings for the queries run inside the block (read when each query executes),
    restored after it."""
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            spark.conf.unset(key) if value is None else spark.conf.set(key, value)


def ship_package(spark) -> None:
    """Make fruits_jobs importable on executors when the job runs straight from a source tree.

    On EMR the package arrives with --py-files (a zip) and nothing is done here.
    """
    import fruits_jobs
    from fruits_jobs.bundle import build_zip

    if ".zip" in (fruits_jobs.__file__ or ""):
        return
    zip_path = build_zip(Path(tempfile.mkdtemp(prefix="fruits-jobs-")) / contract.PY_FILES_ZIP)
    spark.sparkContext.addPyFile(str(zip_path))


def emit_summary(summary: dict) -> None:
    """The job's last stdout line: one JSON object, for the DAG and for people."""
    sys.stdout.flush()
    print(json.dumps(summary, sort_keys=True, allow_nan=False), flush=True)  # strict JSON: no NaN


def run_main(main, argv=None) -> int:
    """Exit codes: 0 done, 2 bad arguments, 3 unusable weights; anything else is a traceback."""
    from fruits_jobs.model import WeightsError

    try:
        main(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0
