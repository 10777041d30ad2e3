"""End to end, no cloud: the real DAG under `dag.test()` with backend=local.

Tiny generated JPEGs plus a truncated JPEG and a text file go through ingest (copy into the lake),
code staging, and the very step arguments EMR would run, executed by a local spark-submit with
weights=random (both Spark jobs really run); each test below reads one aspect of that one run.
"""

import json
from pathlib import Path

import pandas as pd
import pytest
from airflow.utils.state import DagRunState
from airflow.utils.state import TaskInstanceState as S
from test_local_lake_writes import crc_mismatches

from fruits.lake import published
from fruits.lake.storage import LocalStorage
from fruits.tools import cli

from airflow_fixtures import make_landing, xcom
from conftest import seed_models

pytestmark = pytest.mark.spark

AWS_TASKS = {  # the other backends' branches
    "emr.preflight",
    "emr.create_cluster",
    "emr.add_steps",
    "emr.watch_extract_features",
    "emr.watch_reduce_dimensions",
    "emr.terminate_cluster",
    "emr_serverless.preflight",
    "emr_serverless.start_extract_features",
    "emr_serverless.watch_extract_features",
    "emr_serverless.start_reduce_dimensions",
    "emr_serverless.watch_reduce_dimensions",
    "emr_serverless.end_runs",
}
CONF = {"backend": "local", "weights": "random", "batch_id": "e2e", "pca_k": 3}


@pytest.fixture(scope="module")
def pipeline_run(runnable_dag, tmp_path_factory, random_export):
    """One whole run of the DAG on a fresh lake: (dag run, lake folder, landing folder, what was landed)."""
    root = tmp_path_factory.mktemp("e2e")
    seed_models(root / "lake", random_export)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FRUITS_LOCAL_LAKE", str(root / "lake"))
        expected = make_landing(root / "landing")
        dr = runnable_dag.test(run_conf={**CONF, "landing_dir": str(root / "landing")})
        yield dr, root / "lake", root / "landing", expected


@pytest.fixture(scope="module")
def summary(pipeline_run):
    return xcom(pipeline_run[0], "publish_summary")


def test_the_run_succeeds_on_the_local_branch_and_skips_the_aws_ones(pipeline_run):
    dr = pipeline_run[0]
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == DagRunState.SUCCESS, states
    assert states["run_locally"] == S.SUCCESS and states["publish_summary"] == S.SUCCESS
    assert {t for t, s in states.items() if s == S.SKIPPED} == AWS_TASKS  # plain in the graph: nothing ran


def test_every_landed_photo_ends_featurized_or_rejected_with_its_reason(pipeline_run, summary):
    dr, lake, _, expected = pipeline_run
    manifest = json.loads((lake / "manifests" / "batch_id=e2e.json").read_text())
    images = summary["images"]
    assert images["read"] == images["featurized"] + images["rejected"] == len(manifest["files"]) == expected["uploaded"]
    assert images["rejected"] == 2 and sum(images["rejects_by_reason"].values()) == 2
    where = summary["locations"]
    assert where["features"] == f"{lake}/features/batch_id=e2e/run={xcom(dr, 'run_locally')[0]['summary']['run']}"
    features = pd.read_parquet(where["features"])  # the committed run's own folders
    rejects = pd.read_parquet(where["rejects"])
    assert len(features) == images["featurized"] and len(rejects) == images["rejected"]
    assert {p.rsplit("/", 1)[-1] for p in rejects["path"]} == {"truncated_1.jpg", "notes.txt"}


def test_the_batch_is_published_in_the_lake_s_first_space_with_its_plots_model_and_index(pipeline_run, summary):
    lake, where = pipeline_run[1], summary["locations"]
    metrics = json.loads(Path(where["metrics"]).read_text())
    assert metrics["k"] == summary["pca"]["k"] == 3 and metrics["new_space"] and metrics["added"] == ["e2e"]
    assert metrics["n_images"] == summary["images"]["featurized"]
    space = f"{lake}/pca/spaces/{summary['pca']['space']}/"
    for path in where["plots"] + [where["pca_model"]]:
        assert path.startswith(space) and Path(path).exists(), path
    assert where["pca_vectors"].startswith(f"{lake}/vectors/{summary['pca']['space']}/e2e/")  # in the table
    assert "pca_commit" not in where  # the vectors table's commit publishes the space (its record: metrics)
    assert len(pd.read_parquet(where["pca_vectors"])) == summary["images"]["featurized"]
    # publish_summary indexed the new vectors: a piece holding the batch, named in the index's catalog
    catalog = json.loads(Path(space, "index", "catalog.json").read_text())
    assert [list(piece["members"]) for piece in catalog["pieces"]] == [["e2e"]]
    assert Path(lake, catalog["pieces"][0]["key"] + ".usearch").is_file()


def test_the_run_report_times_each_job_in_the_xcom_and_beside_the_outputs(pipeline_run, summary):
    where = summary["locations"]
    report = summary["run_report"]
    assert json.loads(Path(where["run_report"]).read_text()) == report and report["backend"] == "local"
    assert Path(where["run_report"]).parent == Path(where["metrics"]).parent
    # the job's metrics.json stays as the job wrote it: no report in it, its checksum still true
    assert "run_report" not in json.loads(Path(where["metrics"]).read_text())
    assert crc_mismatches(pipeline_run[1]) == []
    wall = report["wall_s"]
    assert (
        wall["total"] == round(wall["extract_features"] + wall["reduce_dimensions"], 1) and wall["extract_features"] > 1
    )
    assert report["images_per_s"]["extract_features"] == round(summary["images"]["read"] / wall["extract_features"], 1)


def test_both_outputs_are_published_as_assets_saying_which_batch_what_and_where(pipeline_run, summary):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.settings import Session
    from sqlalchemy import select

    with Session() as session:
        events = {
            uri: extra
            for uri, extra in session.execute(
                select(AssetModel.uri, AssetEvent.extra)
                .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
                .where(AssetEvent.source_run_id == pipeline_run[0].run_id)
            )
        }
    where = summary["locations"]
    assert events["fruits://lake/features"]["batch_id"] == "e2e"
    assert events["fruits://lake/features"]["featurized"] == summary["images"]["featurized"]
    features, pca = events["fruits://lake/features"], events["fruits://lake/pca"]
    assert not features["features"].startswith("/")  # relative to the lake, which the event names
    assert features["lake"] + features["features"] == where["features"]
    assert pca["k"] == 3 and pca["lake"] + pca["vectors"] == where["pca_vectors"]
    assert pca["new_space"] is True and pca["space"] == summary["pca"]["space"]


def test_fruits_where_prints_the_same_places(pipeline_run, summary, capsys):
    """The command the README's first command ends with."""
    assert cli.main(["--lake", str(pipeline_run[1]), "where"]) == 0
    printed = capsys.readouterr().out
    assert summary["locations"]["metrics"] in printed and "explained variance" in printed


def test_the_same_batch_again_finds_nothing_new_and_runs_no_spark(runnable_dag, pipeline_run):
    _, lake, landing, _ = pipeline_run
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FRUITS_LOCAL_LAKE", str(lake))
        again = runnable_dag.test(run_conf={**CONF, "landing_dir": str(landing)})
    states = {ti.task_id: ti.state for ti in again.get_task_instances()}
    assert again.state == DagRunState.SUCCESS
    assert states["any_new_photos"] == S.SUCCESS and states["run_locally"] == S.SKIPPED
    assert xcom(again, "ingest_new_photos")["uploaded"] == 0


def test_no_new_photos_and_a_refit_asked_run_the_pca_alone(runnable_dag, pipeline_run, summary):
    """any_new_photos used to stop every run without photos, so pca_refit=always had no way to run."""
    _, lake, landing, _ = pipeline_run
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FRUITS_LOCAL_LAKE", str(lake))
        conf = {**CONF, "landing_dir": str(landing), "batch_id": "e2e-refit", "pca_refit": "always"}
        again = runnable_dag.test(run_conf=conf)
    assert again.state == DagRunState.SUCCESS
    assert [r["job"] for r in xcom(again, "run_locally")] == ["reduce_dimensions"]
    result = xcom(again, "publish_summary")
    assert result["batch_id"] is None and result["images"] is None
    assert result["pca"]["new_space"] and result["pca"]["space"] != summary["pca"]["space"]
    assert result["pca"]["n_images"] == summary["images"]["featurized"]


def test_day_after_day_each_run_adds_its_photos_to_the_space_it_keeps(runnable_dag, pipeline_run, tmp_path):
    """Issue 26: the second daily run on a local lake crashed in the PCA (ChecksumException on the
    space's metrics.json, which publish_summary had rewritten). A second day of new photos of the
    classes the space knows, the space kept (pca_refit=never: no drift refit can hide the bug). Twelve
    days running are `make check-days`' (bench/days.py), out of the suite (issue 31)."""
    lake = pipeline_run[1]
    storage = LocalStorage(lake)
    space = published.current_space(storage)
    for day in (2,):
        landing = tmp_path / f"day-{day}"
        make_landing(landing, n_good=6, bad=False, seed=day)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("FRUITS_LOCAL_LAKE", str(lake))
            conf = {**CONF, "landing_dir": str(landing), "batch_id": f"day-{day}", "pca_refit": "never"}
            dr = runnable_dag.test(run_conf=conf)
        assert dr.state == DagRunState.SUCCESS, {ti.task_id: ti.state for ti in dr.get_task_instances()}
        result = xcom(dr, "publish_summary")
        assert result["images"]["featurized"] == 6
        assert (result["pca"]["space"], result["pca"]["new_space"]) == (space["space"], False)
        assert result["pca"]["n_images"] == space["n_images"] + 6  # exactly the day's photos, once
        assert len(pd.read_parquet(result["locations"]["pca_vectors"])) == 6
        assert crc_mismatches(lake) == []
        space = published.current_space(storage)
    vectors = pd.concat(pd.read_parquet(folder) for folder in space["vectors"].values())
    assert len(vectors) == vectors["path"].nunique() == space["n_images"]


def test_a_damaged_batch_is_mended_by_a_rerun_of_the_same_batch(runnable_dag, pipeline_run, summary, capsys):
    """Last: it damages the module's lake. A deleted run folder made the next run fail in PCA with
    PATH_NOT_FOUND, and re-running the batch answered "already processed, nothing to do"."""
    import shutil

    _, lake, _, _ = pipeline_run
    shutil.rmtree(summary["locations"]["features"])
    assert cli.main(["--lake", str(lake), "check"]) == 1
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as env:  # on a machine without a landing folder (issue 26)
        env.setenv("FRUITS_LOCAL_LAKE", str(lake))
        env.setenv("FRUITS_LANDING_DIR", str(lake.parent / "no-landing-here"))
        repair = runnable_dag.test(run_conf={**CONF, "landing_dir": None, "rerun": True})
    assert repair.state == DagRunState.SUCCESS
    assert xcom(repair, "ingest_new_photos")["uploaded"] == 0  # from its stored photos
    assert cli.main(["--lake", str(lake), "check"]) == 0
    assert xcom(repair, "publish_summary")["images"] == summary["images"]  # the same batch, again


def test_a_new_extractor_is_refused_then_switches_every_batch_and_the_space_at_once_when_asked(
    runnable_dag, pipeline_run, weights_file, tmp_path
):
    """Issue 28: other weights than the space's are refused before anything runs; with
    change_extractor, every published batch is featurized again from its stored photos and published
    with the day's in one commit of the features table, then a new space is fitted on them."""
    import re

    from deltalake import DeltaTable

    from fruits_jobs import tables

    _, lake, _, _ = pipeline_run
    storage = LocalStorage(lake)
    old_space, old_runs = published.current_space(storage), published.published_runs(storage)
    landing = tmp_path / "new"
    make_landing(landing, n_good=4, bad=False, seed=28)
    conf = {**CONF, "landing_dir": str(landing), "batch_id": "switch", "weights": str(weights_file)}
    conf.update(rerun=False, pca_refit="auto")  # dag.test keeps an earlier run's conf as the params' values
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FRUITS_LOCAL_LAKE", str(lake))
        refused = runnable_dag.test(run_conf=conf)
        assert refused.state == DagRunState.FAILED
        states = {ti.task_id: ti.state for ti in refused.get_task_instances()}
        assert states["validate_params"] == S.FAILED and states["ingest_new_photos"] != S.SUCCESS
        assert published.published_runs(storage) == old_runs
        switched = runnable_dag.test(run_conf={**conf, "change_extractor": True})
    assert switched.state == DagRunState.SUCCESS, {ti.task_id: ti.state for ti in switched.get_task_instances()}
    result = xcom(switched, "publish_summary")
    new_space = published.current_space(storage)
    assert result["pca"]["new_space"] and result["pca"]["refit_reason"].startswith("extractor changed (weights: random")
    assert new_space["extractor"]["weights"].startswith("sha256:") and set(new_space["features_runs"]) == {
        *old_runs,
        "switch",
    }
    runs = published.published_runs(storage)
    assert len(set(runs.values())) == 1 and not set(runs.values()) & set(old_runs.values())  # one run, all batches
    features = tables.open_table(str(lake / "features"))
    assert features.history(1)[0]["run"] == runs["switch"]  # the switch: one commit
    before = DeltaTable(str(lake / "features"), version=features.version() - 1)
    runs_before = {re.search(r"/run=([^/]+)/", uri).group(1) for uri in before.file_uris()}
    assert runs_before == set(old_runs.values())  # the version before it: every batch's old features
    read = sum(published.read_record(storage, batch, run)["read"] for batch, run in runs.items())
    assert result["run_report"]["images"]["extract_features"] == read  # what the switch featurized
    assert old_space["space"] != new_space["space"]


def test_a_run_s_params_never_become_the_next_run_s_defaults(runnable_dag, tmp_path, capfd, monkeypatch):
    """In one process (dag.test) Airflow 3.1 kept a run's conf in the DAG's Param objects: after a run
    with change_extractor=true, the next run without it was refused for change_extractor. Each run
    here starts from the DAG's own params (airflow_fixtures.each_run_from_the_dags_own_params)."""
    monkeypatch.setenv("FRUITS_LOCAL_LAKE", str(tmp_path / "lake"))
    make_landing(tmp_path / "landing", n_good=2, bad=False)
    conf = {**CONF, "landing_dir": str(tmp_path / "landing")}
    runnable_dag.test(run_conf={**conf, "change_extractor": True})  # refused: no space to change
    capfd.readouterr()
    runnable_dag.test(run_conf={**conf, "precision": "int8"})  # refused for its own reason, checked after
    out = "".join(capfd.readouterr())
    assert "invalid param 'precision'" in out and "invalid param 'change_extractor'" not in out
