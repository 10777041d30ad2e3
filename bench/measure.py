"""What the benchmarks share: the features job as the DAG's local backend launches it, the peak
memory of a running process tree, sampled in a thread, and a batch published as the features job
publishes it from Parquet written here."""

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from fruits.backends.jobs import SparkJob
from fruits.config.settings import REPO
from fruits_jobs import commits, layout, tables
from fruits_jobs.contract import FEATURES_ENTRYPOINT


def features_job(images: Path, out: Path, batch_id: str, weights: str, *extra: str, timeout_s: int = 3600) -> SparkJob:
    """The features job from the source tree, writing out/features and out/rejects (no Spark UI)."""
    args = (
        "--images",
        str(images),
        "--features",
        str(out / "features"),
        "--rejects",
        str(out / "rejects"),
        "--batch-id",
        batch_id,
        "--weights",
        weights,
        *extra,
    )
    return SparkJob(
        name="extract_features",
        entrypoint=str(REPO / "spark_jobs" / FEATURES_ENTRYPOINT),
        py_files=(),
        args=args,
        conf={"spark.ui.enabled": "false"},
        timeout_s=timeout_s,
    )


def tree_rss(proc: psutil.Process) -> dict:
    """RSS now of the whole tree, of the JVM(s), and of the largest Python worker (bytes)."""
    now = {"tree": 0, "jvm": 0, "worker": 0}
    for p in [proc] + proc.children(recursive=True):
        try:
            rss = p.memory_info().rss
            now["tree"] += rss
            if p.name() == "java":
                now["jvm"] += rss
            elif any("pyspark.daemon" in arg or "pyspark.worker" in arg for arg in p.cmdline()):
                now["worker"] = max(now["worker"], rss)
        except psutil.Error:  # ended between the listing and the reading
            pass
    return now


@contextmanager
def peak_rss(proc: psutil.Process, interval_s: float = 0.2):
    """Yields a dict of peaks (bytes: tree, jvm, worker), updated until the block ends."""
    peaks = {"tree": 0, "jvm": 0, "worker": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                for key, value in tree_rss(proc).items():
                    peaks[key] = max(peaks[key], value)
            except psutil.Error:
                pass
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peaks
    finally:
        done.set()
        sampler.join()


def publish_batch(features: Path, batch_id: str, run_id: str, record: dict) -> None:
    """As the features job publishes a batch whose files are already in its run folder (features/
    batch_id=<id>/run=<run>/): its record under batch_runs/, then the features table's commit."""
    folder = Path(layout.run_folder(layout.batch_folder(str(features), batch_id), run_id))
    path = Path(layout.record_path(layout.batch_runs_of(str(features)), batch_id, run_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(commits.record_file(run_id, {"batch_id": batch_id, **record}, None))
    files = [str(p) for p in sorted(folder.glob("*.parquet"))]
    tables.publish_batch(str(features), tables.FEATURES_SCHEMA, batch_id, files, {"run": run_id})
