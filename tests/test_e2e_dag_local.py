"""End to end, no cloud: the real DAG under `dag.test()` with backend=local.

Tiny generated JPEGs plus a truncated JPEG and a text file go through ingest (copy into the lake),
code staging, and the very step arguments EMR would run, executed by a local spark-submit with
weights=random (both Spark jobs really run); then the run's summary is checked against the files.
"""
from airflow_fixtures import make_landing, xcom

import json
from pathlib import Path

import pandas as pd
from airflow.utils.state import DagRunState, TaskInstanceState as S

from fruits.tools import cli

EMR_TASKS = {"emr.preflight", "emr.create_cluster", "emr.add_steps", "emr.watch_extract_features", "emr.watch_reduce_dimensions", "emr.terminate_cluster"}


def test_local_backend_runs_the_whole_pipeline(runnable_dag, tmp_path, monkeypatch, capsys):
    lake = tmp_path / "lake"
    monkeypatch.setenv("FRUITS_LOCAL_LAKE", str(lake))
    expected = make_landing(tmp_path / "landing")
    conf = {"backend": "local", "landing_dir": str(tmp_path / "landing"), "weights": "random",
            "batch_id": "e2e", "pca_k": 3}

    dr = runnable_dag.test(run_conf=conf)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == DagRunState.SUCCESS, states
    assert states["run_locally"] == S.SUCCESS and states["publish_summary"] == S.SUCCESS
    assert {t for t, s in states.items() if s == S.SKIPPED} == EMR_TASKS  # plain in the graph: nothing ran

    manifest = json.loads((lake / "manifests" / "batch_id=e2e.json").read_text())
    summary = xcom(dr, "publish_summary")
    images = summary["images"]
    assert images["read"] == images["featurized"] + images["rejected"] == len(manifest["files"]) == expected["uploaded"]
    assert images["rejected"] == 2 and sum(images["rejects_by_reason"].values()) == 2

    where_ = summary["locations"]
    assert where_["features"] == f"{lake}/features/batch_id=e2e/run={xcom(dr, 'run_locally')[0]['summary']['run']}"
    features = pd.read_parquet(where_["features"])  # the committed run's own folders
    rejects = pd.read_parquet(where_["rejects"])
    assert len(features) == images["featurized"] and len(rejects) == images["rejected"]
    assert {p.rsplit("/", 1)[-1] for p in rejects["path"]} == {"truncated_1.jpg", "notes.txt"}

    metrics = json.loads(Path(where_["metrics"]).read_text())
    assert metrics["k"] == summary["pca"]["k"] == 3
    # the run report: each job's wall time and images/s, in the XCom and beside the outputs
    report = summary["run_report"]
    assert metrics["run_report"] == report and report["backend"] == "local"
    wall = report["wall_s"]
    assert wall["total"] == round(wall["extract_features"] + wall["reduce_dimensions"], 1) and wall["extract_features"] > 1
    assert report["images_per_s"]["extract_features"] == round(images["read"] / wall["extract_features"], 1)
    assert metrics["n_images"] == images["featurized"]
    for path in where_["plots"] + [where_["pca_model"], where_["pca_reduced"], where_["pca_commit"]]:
        assert path.startswith(f"{lake}/pca/batch_id=e2e/") and Path(path).exists(), path

    # Both outputs published as assets, each event saying which batch, what and where
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.settings import Session
    from sqlalchemy import select

    with Session() as session:
        events = {uri: extra for uri, extra in session.execute(
            select(AssetModel.uri, AssetEvent.extra).join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
            .where(AssetEvent.source_run_id == dr.run_id))}
    assert events["fruits://lake/features"]["batch_id"] == "e2e"
    assert events["fruits://lake/features"]["featurized"] == images["featurized"]
    assert events["fruits://lake/features"]["features"] == where_["features"]
    assert events["fruits://lake/pca"]["k"] == 3 and events["fruits://lake/pca"]["reduced"] == where_["pca_reduced"]

    # The helper the README's first command ends with prints the same places.
    assert cli.main(["--lake", str(lake), "where"]) == 0
    printed = capsys.readouterr().out
    assert where_["metrics"] in printed and "explained variance" in printed

    # Same batch again: nothing new, already processed -> short-circuit, no Spark.
    again = runnable_dag.test(run_conf=conf)
    states = {ti.task_id: ti.state for ti in again.get_task_instances()}
    assert again.state == DagRunState.SUCCESS
    assert states["any_new_photos"] == S.SUCCESS and states["run_locally"] == S.SKIPPED
    assert xcom(again, "ingest_new_photos")["uploaded"] == 0
