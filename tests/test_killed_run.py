"""A run killed with SIGKILL never publishes (issue 18), reproduced as an operator meets it: the OOM
killer (or `kill -9`, or a worker torn down) hits `airflow dags test` four seconds into the features
step; a new batch then lands the same photos; the killed run's job, had it survived, commits late.
Every photo must end in exactly one published batch, and nothing of the killed run keep running."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from airflow.utils.state import DagRunState

from fruits.lake import leases, published
from fruits.lake.storage import LocalStorage
from fruits_jobs import commits, layout, tables

from airflow_fixtures import make_landing
from conftest import seed_models

pytestmark = [pytest.mark.spark, pytest.mark.dag]
PHOTOS = 30


def job_processes(root: psutil.Process) -> list[psutil.Process]:
    """The features job's processes under root (the guard, spark-submit's JVM, its Python)."""
    found = []
    for proc in root.children(recursive=True):
        try:
            if any("extract_features" in arg or "local.guard" in arg for arg in proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def test_a_run_killed_with_sigkill_never_publishes_and_leaves_nothing_running(
    airflow_db, runnable_dag, spark, tmp_path, monkeypatch, random_export
):
    lake, landing = tmp_path / "lake", tmp_path / "landing"
    seed_models(lake, random_export)
    assert make_landing(landing, n_good=PHOTOS, bad=False)["uploaded"] == PHOTOS
    monkeypatch.setenv("FRUITS_LOCAL_LAKE", str(lake))
    conf = {"backend": "local", "landing_dir": str(landing), "weights": "random", "pca_k": 2}

    # 1. bx-1 under `airflow dags test`, in a process group of its own as a worker runs it.
    airflow = str(Path(sys.executable).with_name("airflow"))
    run = subprocess.Popen(
        [airflow, "dags", "test", "fruits_pipeline", "-c", json.dumps({**conf, "batch_id": "bx-1"})],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not job_processes(psutil.Process(run.pid)):
        assert run.poll() is None and time.monotonic() < deadline, "the features step never started"
        time.sleep(0.2)
    time.sleep(4)  # four seconds into the features step
    doomed = job_processes(psutil.Process(run.pid))
    started = leases.read_lease(LocalStorage(lake), "bx-1")  # what the job read at its start
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(30)

    # 2. Nothing of the killed run keeps running: no spark-submit left to publish later.
    gone, alive = psutil.wait_procs(doomed, timeout=30)
    assert alive == [], [p.cmdline() for p in alive]

    # 3. A new batch on the same folder takes the 30 photos (bx-1 never published).
    dr = runnable_dag.test(run_conf={**conf, "batch_id": "bx-2"})
    assert dr.state == DagRunState.SUCCESS

    # 4. bx-1's job, had it survived, commits late: its files, under the lease generation it started
    #    with, which bx-2's ingest fenced in the table's log (it revoked bx-1's lease).
    storage = LocalStorage(lake)
    from deltalake import DeltaTable

    late_run = commits.new_run_id()
    late = lake / layout.run_folder(layout.batch_folder(layout.FEATURES, "bx-1"), late_run) / "part-00000.parquet"
    late.parent.mkdir(parents=True)
    shutil.copy(DeltaTable(str(lake / "features")).file_uris()[0], late)
    with pytest.raises(tables.GivenUp, match="given up and publishes nothing"):
        table = str(lake / "features")
        tables.publish_batch(
            table, tables.FEATURES_SCHEMA, "bx-1", [str(late)], {"run": late_run}, started["generation"]
        )

    # Every photo in exactly one published batch, whoever reads the lake.
    assert published.is_published(storage, "bx-2") and not published.is_published(storage, "bx-1")
    current = commits.read_current(spark, str(lake / "features")).collect()
    assert len(current) == PHOTOS == len({row["sha256"] for row in current})
    # ... and through the Delta tables (issue 27): the killed run added nothing to them.
    rows = DeltaTable(str(lake / "features")).to_pyarrow_table(columns=["batch_id", "sha256"]).to_pylist()
    assert {r["batch_id"] for r in rows} == {"bx-2"} and len({r["sha256"] for r in rows}) == len(rows) == PHOTOS
    vectors = DeltaTable(str(lake / "vectors")).to_pyarrow_table(columns=["path", "batch_id"]).to_pylist()
    assert {r["batch_id"] for r in vectors} == {"bx-2"} and len({r["path"] for r in vectors}) == PHOTOS
