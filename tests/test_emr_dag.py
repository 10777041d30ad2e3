"""The EMR path of the real DAG, run with `dag.test()` against moto (S3 and EMR, in-process).

How the steps are driven: moto never runs or moves EMR steps by itself. These tests wrap moto's
own `Cluster.add_steps` so that, right after AddJobFlowSteps, the steps carry the states EMR would
report for the scenario (COMPLETED/COMPLETED, or FAILED/CANCELLED as CANCEL_AND_WAIT does), and in
the success case the test also writes the two JSON summaries the Spark jobs would have written to
the bucket. Everything else is real: the operators, sensors, teardown, S3Hook and botocore's
request validation. Every AWS call made is checked against the Airflow role's IAM policy (`aws`).
"""

import dataclasses
import gzip
import hashlib
import io
import json
import re
from datetime import UTC, datetime, timedelta

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
from airflow.utils.state import DagRunState, TaskInstanceState
from moto.emr.models import Cluster
from space_fixtures import put_published, vectors_table

from fruits.config.params import build_params
from fruits.lake import vector_index
from fruits.lake.storage import S3Storage
from fruits_jobs import features, layout, pca, spaces, tables
from fruits_jobs.moments import BatchMoments

from airflow_fixtures import BUCKET, REGION, emr_run_config, make_landing, template_policy, xcom

S = TaskInstanceState
LIVE = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]
RUN = "20260101T000000000Z-0000abcd"
STEP_TIMES = (240, 4, 2)  # seconds: boot and bootstrap, features, PCA
SERVERLESS_TASKS = [
    "emr_serverless.preflight",
    *(
        f"emr_serverless.{kind}_{job}"
        for job in ("extract_features", "reduce_dimensions")
        for kind in ("start", "watch")
    ),
    "emr_serverless.end_runs",
]
EMR_ACTIONS = {
    "ListClusters",
    "RunJobFlow",
    "DescribeCluster",
    "ListSteps",
    "AddJobFlowSteps",
    "DescribeStep",
    "TerminateJobFlows",
    "ListInstanceGroups",
}


def simulate_emr(monkeypatch, states, write_outputs=None, stderr=None, cluster_error=None):
    """Give added steps the scenario's states, as EMR would once it ran them (moto does not); with
    stderr, write the first step's stderr.gz where EMR copies it (LogUri/<cluster>/steps/<step>/);
    with cluster_error, end the cluster as a failed bootstrap does (TERMINATED_WITH_ERRORS)."""
    original = Cluster.add_steps

    def add_steps(self, steps):
        added = original(self, steps)
        if not added:  # RunJobFlow's own (empty) list of steps
            return added
        # EMR's timeline of the run: asked for 10 min ago, ready (booted, bootstrapped) 4 min later,
        # then the steps one after the other (the figures the run report reads).
        self.creation_datetime = datetime.now(UTC) - timedelta(minutes=10)
        self.ready_datetime = self.creation_datetime + timedelta(seconds=STEP_TIMES[0])
        started = self.ready_datetime
        for step, state, took in zip(added, states, STEP_TIMES[1:], strict=False):  # fewer states: not started
            step.state = state
            step.start_date_time, step.end_date_time = started, started + timedelta(seconds=took)
            started = step.end_date_time
        if write_outputs:
            write_outputs()
        if stderr is not None:
            boto3.client("s3", region_name=REGION).put_object(
                Bucket=BUCKET, Key=f"logs/emr/{self.id}/steps/{added[0].id}/stderr.gz", Body=gzip.compress(stderr)
            )
        if cluster_error:
            self.state, self.last_state_change_reason = "TERMINATED_WITH_ERRORS", cluster_error
        return added

    monkeypatch.setattr(Cluster, "add_steps", add_steps)


def a_cluster(emr) -> str:
    """A bare cluster of this project on moto (logs under the bucket), for the sensors' own tests."""
    return emr.run_job_flow(
        Name="c",
        ReleaseLabel="emr-7.12.0",
        LogUri=f"s3n://{BUCKET}/logs/emr/",
        Instances={"InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True, "MasterInstanceType": "m5.xlarge"},
        Tags=[{"Key": "project", "Value": "fruits"}],
        JobFlowRole="fruits-emr-ec2-role",
        ServiceRole="fruits-emr-service-role",
    )["JobFlowId"]


def lease_now(batch_id) -> dict:
    """The batch's lease now: what its features job reads when it starts."""
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=BUCKET, Key=layout.lease_key(batch_id))["Body"]
    return json.loads(body.read())


def lease_token(batch_id):
    return lease_now(batch_id)["token"]


def as_cluster(data: bytes, key: str) -> None:
    """A write of the jobs (the cluster's role), not Airflow's."""
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=key, Body=data)


def write_job_outputs(batch_id, started=None, run=RUN, kept=None):
    """What the two jobs publish for a batch of 12 photos (10 featurized, 2 rejected), written with the
    jobs' own record builder: its run's files and record, then the features table's commit (delta-rs,
    on moto's server), fenced by the lease generation the run started under (started: the lease its
    job read at its start; default: the lease's now): a run given up on publishes nothing, and no PCA
    runs after it. The PCA's is the lake's first embedding space (issue 20), fitted at this run on the
    batch: its run's record (metrics.json), the batch's vectors in it and the vectors table's commit
    (real Parquet, which publish_summary indexes; write_space)."""
    root = f"s3://{BUCKET}/"
    lease = started or lease_now(batch_id)
    args = features.parse_args(
        [
            "--images",
            root + layout.raw_prefix(batch_id),
            "--features",
            root + layout.FEATURES,
            "--rejects",
            root + layout.REJECTS,
            "--batch-id",
            batch_id,
            "--weights",
            "random",
        ]
    )
    outputs = {
        "features": layout.run_folder(layout.batch_folder(root + layout.FEATURES, batch_id), run),
        "rejects": layout.run_folder(layout.batch_folder(root + layout.REJECTS, batch_id), run),
        "moments": layout.moments_path(root + "batch_runs", batch_id, run),
    }
    summary = features.batch_summary(
        args, run, outputs, 10, {"not_an_image": 1, "truncated": 1}, {}, 4.0, lease["token"]
    )
    fence = (tables.lease_app_id(batch_id), lease["generation"])
    try:
        record = {k: v for k, v in summary.items() if k not in ("batch_id", "run")}
        put_published(S3Storage(BUCKET, "aws_default"), batch_id, run, put=as_cluster, fence=fence, **record)
    except tables.GivenUp:
        return
    write_space(batch_id, run, kept)


def write_space(batch_id, run=RUN, kept=None):
    """What the PCA job publishes when it fits the lake's first space on one batch of 10 featurized
    photos (its features run: run), with the job's own record builder (space_metrics); kept (the
    current space's record, as stored): a day without a refit, which adds the batch to that space."""
    s3 = boto3.client("s3", region_name=REGION)
    root = f"s3://{BUCKET}/"

    def put(uri: str, data: bytes) -> None:
        s3.put_object(Bucket=BUCKET, Key=uri[len(root) :], Body=data)

    pca_uri = root + layout.PCA.rstrip("/")
    pca_args = pca.parse_args(["--features", root + layout.FEATURES, "--output", pca_uri, "--k", "3"])
    rng = np.random.default_rng(0)
    photos = rng.normal(size=(10, 1280))
    paths = [f"{root}{layout.raw_prefix(batch_id)}Banana/{i}.jpg" for i in range(10)]
    totals = BatchMoments.empty(1280).add_rows(photos, ["Training"] * 10, ["Banana"] * 10, paths)
    spectrum = np.zeros(1280)
    spectrum[:4] = [0.5, 0.3, 0.15, 0.05]
    basis = spaces.Basis(np.eye(1280)[:, :3], spectrum, totals.moments.mean)
    rule = spaces.k_rule(pca_args.k, pca_args.variance)
    reason = None if kept else spaces.refit_reason(None, pca_args.refit, rule, spaces.Drift())
    space_id = kept["space"] if kept else run
    metrics = pca.space_metrics(pca_args, kept, space_id, run, basis, rule, totals, reason, spaces.Drift(), 10)
    space = layout.space_folder(pca_uri, space_id)
    run_folder = layout.space_run_folder(pca_uri, space_id, run)
    vectors = layout.vectors_folder(pca_uri, space_id, batch_id, run)
    metrics.update(
        added=[batch_id],
        withdrawn=[],
        vectors={**(kept or {}).get("vectors", {}), batch_id: layout.refer(vectors, root)},
        features_runs={**(kept or {}).get("features_runs", {}), batch_id: run},
        model=f"{space}/{layout.PCA_MODEL_DIR}",
        basis=f"{space}/{layout.BASIS_FILE}",
        state=f"{run_folder}/{layout.STATE_FILE}",
        metrics=f"{run_folder}/{layout.PCA_METRICS_FILE}",
        confusion=[],
        class_quality=None,
    )
    sink = io.BytesIO()
    pq.write_table(vectors_table(batch_id, photos[:, :3], paths, ["Banana"] * 10), sink)
    put(f"{vectors}/part-00000.snappy.parquet", sink.getvalue())
    put(f"{vectors}/_SUCCESS", b"")
    # as the job writes its record, then the vectors table's commit (delta-rs, on moto's server)
    put(metrics["metrics"], json.dumps(layout.refer_record(metrics, root), allow_nan=False).encode())
    tables.publish(
        root + layout.VECTORS,
        tables.VECTORS_SCHEMA,
        [tables.SPACE_COLUMN, layout.PARTITION_COLUMN],
        {(space_id, batch_id): [(f"{vectors}/part-00000.snappy.parquet", len(sink.getvalue()), 10)]},
        (lambda partition: partition[layout.PARTITION_COLUMN] == batch_id) if kept else (lambda partition: True),
        {"run": run, "space": space_id},
    )


def run(dag, landing, batch_id, **conf):
    # Every param, defaults included: dag.test() keeps a run's conf in the (session-wide) DAG's params.
    defaults = {name: param.value for name, param in build_params().items()}
    dr = dag.test(run_conf={**defaults, "backend": "emr", "landing_dir": str(landing), "batch_id": batch_id, **conf})
    return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}


def clusters(states=None):
    emr = boto3.client("emr", region_name=REGION)
    return emr.list_clusters(**({"ClusterStates": states} if states else {}))["Clusters"]


@pytest.fixture
def landing(tmp_path):
    make_landing(tmp_path / "landing")
    return tmp_path / "landing"


def test_completed_steps_publish_the_summary_and_end_the_cluster(airflow_db, runnable_dag, aws, landing, monkeypatch):
    simulate_emr(monkeypatch, ["COMPLETED", "COMPLETED"], lambda: write_job_outputs("b-ok"))
    dr, states = run(runnable_dag, landing, "b-ok", pca_k=3)
    assert dr.state == DagRunState.SUCCESS, states
    assert states == {
        "validate_params": S.SUCCESS,
        "ingest_new_photos": S.SUCCESS,
        "any_new_photos": S.SUCCESS,
        "stage_code": S.SUCCESS,
        "plan_jobs": S.SUCCESS,
        "choose_backend": S.SUCCESS,
        "emr.preflight": S.SUCCESS,
        "emr.create_cluster": S.SUCCESS,
        "emr.add_steps": S.SUCCESS,
        "emr.watch_extract_features": S.SUCCESS,
        "emr.watch_reduce_dimensions": S.SUCCESS,
        "emr.terminate_cluster": S.SUCCESS,
        **{task: S.SKIPPED for task in SERVERLESS_TASKS},
        "run_locally": S.SKIPPED,
        "publish_summary": S.SUCCESS,
    }
    (cluster,) = clusters()
    assert cluster["Status"]["State"] == "TERMINATED"
    emr = boto3.client("emr", region_name=REGION)
    steps = emr.list_steps(ClusterId=cluster["Id"])["Steps"][::-1]  # newest first in the API
    assert [s["Name"] for s in steps] == ["extract_features b-ok", "reduce_dimensions b-ok"]
    assert [s["ActionOnFailure"] for s in steps] == ["CANCEL_AND_WAIT", "CANCEL_AND_WAIT"]
    summary = xcom(dr, "publish_summary")
    assert summary["images"] == {
        "read": 12,
        "featurized": 10,
        "rejected": 2,
        "rejects_by_reason": {"not_an_image": 1, "truncated": 1},
    }
    assert (summary["pca"]["k"], summary["pca"]["total_explained_variance"]) == (3, 0.95)
    assert (summary["pca"]["space"], summary["pca"]["new_space"], summary["pca"]["n_images"]) == (RUN, True, 10)
    assert summary["pca"]["refit_reason"] == "the lake's first space"
    space = f"s3://{BUCKET}/pca/spaces/{RUN}"
    assert summary["locations"]["metrics"] == f"{space}/runs/{RUN}/metrics.json"
    assert summary["locations"]["pca_vectors"] == f"s3://{BUCKET}/vectors/{RUN}/b-ok/{RUN}"
    assert summary["locations"]["pca_model"] == f"{space}/model"
    # The run report (issue 11): the cluster, its timeline, images/s per step and the estimated cost.
    report = summary["run_report"]
    assert report["cluster_id"] == cluster["Id"] and report["release"] == "emr-7.12.0"
    assert report["instances"] == [
        {"role": "MASTER", "type": "m5.xlarge", "count": 1, "market": "ON_DEMAND"},
        {"role": "CORE", "type": "m5.2xlarge", "count": 2, "market": "ON_DEMAND"},
    ]
    wall = report["wall_s"]
    assert (wall["boot_and_bootstrap"], wall["extract_features"], wall["reduce_dimensions"]) == STEP_TIMES
    assert report["images_per_s"] == {"extract_features": 12 / 4, "reduce_dimensions": 10 / 2}
    cost = report["cost"]  # eu-west-1 on-demand, EC2 + EMR, from plugins/fruits/backends/emr/emr_prices.json
    hourly = (0.214 + 0.048) + 2 * (0.428 + 0.096)
    assert 600 <= wall["cluster"] < 900 and cost["hours"] == round(wall["cluster"] / 3600, 3)
    assert cost["run_usd"] == pytest.approx(hourly * wall["cluster"] / 3600, rel=1e-3)
    assert cost["per_1000_images_usd"] == pytest.approx(1000 * cost["run_usd"] / 12, rel=1e-3)
    s3 = boto3.client("s3", region_name=REGION)
    report_key = f"pca/spaces/{RUN}/runs/{RUN}/run_report.json"
    assert json.loads(s3.get_object(Bucket=BUCKET, Key=report_key)["Body"].read()) == report  # beside the outputs
    # the new vectors' index piece, beside the space (fruits similar searches it)
    index = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"pca/spaces/{RUN}/index/")["Contents"]
    piece = vector_index.piece_key({"space": RUN}, {"b-ok": RUN})
    catalog = f"pca/spaces/{RUN}/index/catalog.json"
    assert {o["Key"] for o in index} == {catalog, piece + ".usearch", piece + ".rows.parquet"}
    code = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET, Prefix="code/")["Contents"]
    assert {o["Key"].split("/", 2)[2] for o in code} >= {"extract_features.py", "fruits_jobs.zip", "requirements.lock"}
    assert {op for service, op, _ in aws if service == "emr"} == EMR_ACTIONS  # the policy grants no more


def objects(prefixes=("features/", "rejects/", "batch_runs/", "pca/", "vectors/")) -> dict[str, bytes]:
    s3 = boto3.client("s3", region_name=REGION)
    keys = [o["Key"] for p in prefixes for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=p).get("Contents", [])]
    return {key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


def test_day_after_day_the_files_the_jobs_wrote_never_change_and_each_run_has_its_report(
    airflow_db, runnable_dag, aws, tmp_path, monkeypatch
):
    """Issue 26, the EMR side of the report flow: day 2 keeps day 1's space; publish_summary writes
    each run's report to runs/<run>/run_report.json and leaves every object the jobs wrote (commits,
    metrics.json, vectors, features) byte for byte as they wrote it."""
    day2 = "20260102T000000000Z-0000beef"
    written: dict[str, bytes] = {}

    def jobs_of(batch_id, run_id, kept):
        def write():
            write_job_outputs(batch_id, run=run_id, kept=kept() if kept else None)
            # the jobs' files; the index is Airflow's own (its catalog switches as pieces merge)
            written.update({key: data for key, data in objects().items() if "/index/" not in key})

        return write

    def current_space():
        record = f"pca/spaces/{RUN}/runs/{RUN}/metrics.json"
        return json.loads(boto3.client("s3", region_name=REGION).get_object(Bucket=BUCKET, Key=record)["Body"].read())

    for day, (batch_id, run_id, kept) in enumerate([("b-1", RUN, None), ("b-2", day2, current_space)], 1):
        make_landing(tmp_path / f"day-{day}", n_good=10, seed=day)
        with monkeypatch.context() as patched:
            simulate_emr(patched, ["COMPLETED", "COMPLETED"], jobs_of(batch_id, run_id, kept))
            dr, states = run(runnable_dag, tmp_path / f"day-{day}", batch_id, pca_k=3, pca_refit="never")
        assert dr.state == DagRunState.SUCCESS, states
        summary = xcom(dr, "publish_summary")
        assert (summary["pca"]["space"], summary["pca"]["new_space"]) == (RUN, day == 1)
        assert summary["locations"]["run_report"] == f"s3://{BUCKET}/pca/spaces/{RUN}/runs/{run_id}/run_report.json"
        stored = objects()
        changed = [key for key, data in written.items() if stored.get(key) != data]
        assert changed == [], "publish_summary changed what the jobs wrote"
        report_key = f"pca/spaces/{RUN}/runs/{run_id}/run_report.json"
        assert report_key not in written and json.loads(stored[report_key]) == summary["run_report"]
    assert set(json.loads(written[f"pca/spaces/{RUN}/runs/{day2}/metrics.json"])["vectors"]) == {"b-1", "b-2"}


def test_retried_cluster_and_step_tasks_ask_emr_for_nothing_twice(airflow_db, runnable_dag, aws, landing, monkeypatch):
    """create_cluster's first try dies right after RunJobFlow (here: saving the console link), and
    add_steps' first try loses AddJobFlowSteps' response (the steps were added): the retries reuse
    the cluster and the steps instead of paying for a second cluster or running each job twice."""
    from datetime import timedelta

    import botocore.handlers
    from airflow.providers.amazon.aws.operators import emr as emr_operators

    for task_id in ("emr.create_cluster", "emr.add_steps"):
        monkeypatch.setattr(runnable_dag.get_task(task_id), "retries", 1)
        monkeypatch.setattr(runnable_dag.get_task(task_id), "retry_delay", timedelta(0))
    failures = {"persist": 1, "add": 1}

    def once(what, error):
        if failures[what]:
            failures[what] -= 1
            raise error

    original_persist = emr_operators.EmrClusterLink.persist
    monkeypatch.setattr(
        emr_operators.EmrClusterLink,
        "persist",
        lambda *a, **kw: (once("persist", ConnectionError("worker lost after RunJobFlow")), original_persist(*a, **kw)),
    )
    monkeypatch.setattr(
        botocore.handlers,
        "BUILTIN_HANDLERS",
        botocore.handlers.BUILTIN_HANDLERS
        + [("after-call.emr.AddJobFlowSteps", lambda **_: once("add", ConnectionError("response lost")))],
    )
    simulate_emr(monkeypatch, ["COMPLETED", "COMPLETED"], lambda: write_job_outputs("b-retry"))
    dr, states = run(runnable_dag, landing, "b-retry")
    assert dr.state == DagRunState.SUCCESS, states
    assert failures == {"persist": 0, "add": 0}  # both first tries did fail
    tries = {ti.task_id: ti.try_number for ti in dr.get_task_instances()}
    assert tries["emr.create_cluster"] == 2 and tries["emr.add_steps"] == 2
    (cluster,) = clusters()  # one cluster, ended by the teardown
    assert cluster["Status"]["State"] == "TERMINATED"
    steps = boto3.client("emr", region_name=REGION).list_steps(ClusterId=cluster["Id"])["Steps"]
    assert sorted(s["Name"] for s in steps) == ["extract_features b-retry", "reduce_dimensions b-retry"]


def test_failed_features_step_fails_the_run_and_leaves_nothing_running(
    airflow_db, runnable_dag, aws, landing, monkeypatch, capfd
):
    stderr = "\n".join(f"spark line {i}" for i in range(80)) + "\nOSError: weights file is not HDF5\n"
    simulate_emr(monkeypatch, ["FAILED", "CANCELLED"], stderr=stderr.encode())
    dr, states = run(runnable_dag, landing, "b-fail")
    assert states["emr.watch_extract_features"] == S.FAILED, states
    # Why, in the task's own log: the step's state and the end of its stderr, not only "FAILED".
    log = "".join(capfd.readouterr())
    assert "is FAILED" in log and "OSError: weights file is not HDF5" in log
    assert "for reason " not in log  # the FailureDetails are EmrStepSensor's own exception message: not repeated
    assert "spark line 79" in log and "spark line 20\n" not in log  # the last 50 lines
    assert dr.state == DagRunState.FAILED  # the teardown's success does not make it green
    assert states["emr.watch_extract_features"] == S.FAILED
    assert states["emr.watch_reduce_dimensions"] == S.UPSTREAM_FAILED
    assert states["emr.terminate_cluster"] == S.SUCCESS
    assert states["publish_summary"] == S.UPSTREAM_FAILED
    assert clusters(LIVE) == []
    assert [c["Status"]["State"] for c in clusters()] == ["TERMINATED"]


def test_no_new_photos_short_circuits_without_a_cluster(airflow_db, runnable_dag, aws, tmp_path):
    (tmp_path / "empty").mkdir()
    dr, states = run(runnable_dag, tmp_path / "empty", "b-empty")
    assert dr.state == DagRunState.SUCCESS
    assert states["any_new_photos"] == S.SUCCESS
    skipped = {t for t, s in states.items() if s == S.SKIPPED}
    assert skipped == set(states) - {"validate_params", "ingest_new_photos", "any_new_photos"}
    assert clusters() == []
    assert not [c for c in aws if c[0] == "emr"]


def test_no_new_photos_but_a_batch_missing_from_the_space_runs_the_pca_step_alone(
    airflow_db, runnable_dag, aws, tmp_path, monkeypatch
):
    """Issue 20: a run without new photos still brings the embedding space up to date (here: a batch
    published before any space): one cluster, the PCA step alone, and the features sensor has no step
    to wait for. The summary is the space's, with no batch of its own."""
    s3 = boto3.client("s3", region_name=REGION)
    args = features.parse_args(
        ["--images", "i", "--features", "f", "--rejects", "r", "--batch-id", "b-old", "--weights", "random"]
    )
    folder = layout.batch_folder(f"s3://{BUCKET}/" + layout.FEATURES, "b-old")
    old = features.batch_summary(
        args, RUN, {"features": layout.run_folder(folder, RUN), "rejects": None}, 10, {}, {}, 1.0, None
    )
    as_cluster(b'{"files": []}', layout.manifest_key("b-old"))  # ingest's, first
    record = {k: v for k, v in old.items() if k not in ("batch_id", "run")}
    put_published(S3Storage(BUCKET, "aws_default"), "b-old", RUN, put=as_cluster, **record)  # published, no lease
    simulate_emr(monkeypatch, ["COMPLETED"], lambda: write_space("b-old"))
    (tmp_path / "empty").mkdir()
    dr, states = run(runnable_dag, tmp_path / "empty", "b-none")
    assert dr.state == DagRunState.SUCCESS, states
    assert {t for t, s in states.items() if s != S.SUCCESS} == {"run_locally", *SERVERLESS_TASKS}
    (cluster,) = clusters()
    assert cluster["Status"]["State"] == "TERMINATED"
    steps = boto3.client("emr", region_name=REGION).list_steps(ClusterId=cluster["Id"])["Steps"]
    assert [s["Name"] for s in steps] == ["reduce_dimensions b-none"]
    assert xcom(dr, "emr.add_steps") == {"extract_features": None, "reduce_dimensions": steps[0]["Id"]}
    summary = xcom(dr, "publish_summary")
    assert (summary["batch_id"], summary["images"]) == (None, None)
    assert (summary["pca"]["space"], summary["pca"]["new_space"], summary["pca"]["n_images"]) == (RUN, True, 10)
    assert summary["locations"] == {
        "pca_model": f"s3://{BUCKET}/pca/spaces/{RUN}/model",
        "metrics": f"s3://{BUCKET}/pca/spaces/{RUN}/runs/{RUN}/metrics.json",
        "run_report": f"s3://{BUCKET}/pca/spaces/{RUN}/runs/{RUN}/run_report.json",
        "plots": [],
    }
    report = summary["run_report"]
    assert report["wall_s"]["extract_features"] is None and report["wall_s"]["reduce_dimensions"] > 0
    assert report["images_per_s"]["reduce_dimensions"] == 10 / report["wall_s"]["reduce_dimensions"]
    stored = s3.get_object(Bucket=BUCKET, Key=f"pca/spaces/{RUN}/runs/{RUN}/run_report.json")["Body"].read()
    assert json.loads(stored) == report
    piece = vector_index.piece_key({"space": RUN}, {"b-old": RUN})
    index = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"pca/spaces/{RUN}/index/")["Contents"]
    catalog = f"pca/spaces/{RUN}/index/catalog.json"
    assert {o["Key"] for o in index} == {catalog, piece + ".usearch", piece + ".rows.parquet"}


def test_a_killed_sensor_cancels_the_steps_still_live_on_its_cluster(airflow_db, pipeline_dag, aws, monkeypatch):
    """Marking the run failed kills the sensor's task: its step and the ones queued after it must not
    go on running (moto has no CancelSteps, so that one call is checked with botocore's Stubber)."""
    from airflow.providers.amazon.aws.hooks.emr import EmrHook
    from botocore.stub import Stubber

    emr = boto3.client("emr", region_name=REGION)
    stub = Stubber(emr)
    stub.add_response(
        "list_steps",
        {"Steps": [{"Id": "s-2"}, {"Id": "s-1"}]},
        {"ClusterId": "j-1", "StepStates": ["PENDING", "RUNNING"]},
    )
    stub.add_response(
        "cancel_steps",
        {"CancelStepsInfoList": []},
        {"ClusterId": "j-1", "StepIds": ["s-2", "s-1"], "StepCancellationOption": "TERMINATE_PROCESS"},
    )
    monkeypatch.setattr(EmrHook, "conn", property(lambda self: emr))
    sensor = pipeline_dag.get_task("emr.watch_extract_features")
    # as rendered at run time
    sensor.job_flow_id, sensor.step_id = "j-1", "s-1"
    sensor.lease_uri = f"s3://{BUCKET}/{layout.lease_key('b-cancel')}"
    with stub:
        sensor.on_kill()
    stub.assert_no_pending_responses()
    assert lease_token("b-cancel") is None  # and its step, if it still finishes, publishes nothing


def test_a_local_weights_file_is_staged_once_before_any_cluster(
    airflow_db, runnable_dag, aws, landing, tmp_path, monkeypatch
):
    weights = tmp_path / "mine.weights.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\nweights of this machine")  # an HDF5 file's signature first
    key = f"models/{hashlib.sha256(weights.read_bytes()).hexdigest()}.weights.h5"
    simulate_emr(monkeypatch, ["COMPLETED", "COMPLETED"], lambda: write_job_outputs("b-w"))
    dr, states = run(runnable_dag, landing, "b-w", weights=str(weights))
    assert dr.state == DagRunState.SUCCESS, states
    s3 = boto3.client("s3", region_name=REGION)
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == weights.read_bytes()
    (cluster,) = clusters()
    step = boto3.client("emr", region_name=REGION).list_steps(ClusterId=cluster["Id"])["Steps"][-1]  # features
    args = step["Config"]["Args"]
    assert args[args.index("--weights") + 1] == f"s3://{BUCKET}/{key}"


def test_a_wheelhouse_is_staged_once_per_lock_and_given_to_the_bootstrap(
    airflow_db, runnable_dag, aws, landing, tmp_path, monkeypatch
):
    """Clusters in a subnet without internet install the jobs' closure from the bucket."""
    from fruits_jobs.bundle import LOCK, spark_jobs_dir

    lock = spark_jobs_dir() / LOCK

    wheels = tmp_path / "wheelhouse"
    wheels.mkdir()
    for name, version in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock.read_text(), re.M):
        (wheels / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"a wheel")
    monkeypatch.setenv("FRUITS_WHEELHOUSE", str(wheels))
    simulate_emr(monkeypatch, ["COMPLETED", "COMPLETED"], lambda: write_job_outputs("b-wh"))
    dr, states = run(runnable_dag, landing, "b-wh")
    assert dr.state == DagRunState.SUCCESS, states
    prefix = f"wheels/{hashlib.sha256(lock.read_bytes()).hexdigest()}/"
    staged = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    assert len(staged) == len(list(wheels.iterdir()))
    (cluster,) = clusters()
    request = boto3.client("emr", region_name=REGION).list_bootstrap_actions(ClusterId=cluster["Id"])
    assert request["BootstrapActions"][0]["Args"][-1] == f"s3://{BUCKET}/{prefix}"


def test_an_incomplete_wheelhouse_is_refused_before_anything_runs(tmp_path):
    from fruits.backends.emr.backend import wheelhouse_folder
    from fruits.config.params import InvalidParam

    (tmp_path / "numpy-1.0-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(InvalidParam, match="lacks .* wheel.*make wheelhouse"):
        wheelhouse_folder(str(tmp_path))


def no_weights(monkeypatch):
    return {
        "weights": f"s3://{BUCKET}/models/none.weights.h5"
    }, "weights: s3://fruits-test/models/none.weights.h5 does not exist"


def no_service_role(monkeypatch):
    boto3.client("iam", region_name=REGION).delete_role(RoleName="fruits-emr-service-role")
    return {}, "fruits_emr_service_role: role 'fruits-emr-service-role' not found"


def untagged_subnet(monkeypatch):
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    monkeypatch.setenv("FRUITS_SUBNET_ID", subnet)
    return {}, f"fruits_subnet_id: subnet {subnet} lacks the tag for-use-with-amazon-emr-managed-policies=true"


def type_not_offered(monkeypatch):
    return {"instance_type": "m5.huge"}, "instance_type: m5.huge is not offered in eu-west-1"


@pytest.mark.parametrize("problem", [no_weights, no_service_role, untagged_subnet, type_not_offered])
def test_preflight_finds_what_would_fail_a_cluster_and_creates_none(
    airflow_db, runnable_dag, aws, landing, monkeypatch, capfd, problem
):
    conf, message = problem(monkeypatch)
    dr, states = run(runnable_dag, landing, f"b-pre-{problem.__name__}".replace("_", "-"), **conf)
    assert dr.state == DagRunState.FAILED and states["emr.preflight"] == S.FAILED, states
    assert states["emr.create_cluster"] == S.UPSTREAM_FAILED
    assert clusters() == [] and not [op for service, op, _ in aws if op == "RunJobFlow"]
    assert message in "".join(capfd.readouterr())  # the task's log: the failure names the setting


def test_preflight_says_when_the_bucket_is_in_another_region_than_the_connection(aws):
    """(Not through a DAG run: Airflow caches the connection, so changing its region mid-session
    would leak into the next tests.)"""
    from fruits.backends.emr import preflight

    cfg = emr_run_config("b")
    far = preflight.Clients(boto3.client("s3", region_name=REGION), None, None, "us-east-1")
    assert preflight.check_bucket(cfg, far) == [
        "fruits_bucket: bucket 'fruits-test' is in eu-west-1, the aws_default connection in us-east-1: set "
        "region_name=eu-west-1 in the connection's extra, or use a bucket in us-east-1"
    ]
    assert preflight.check_bucket(cfg, far._replace(region=REGION)) == []
    missing = preflight.check_bucket(dataclasses.replace(cfg, bucket="nope"), far)
    assert missing[0].startswith("fruits_bucket: bucket 'nope' cannot be read")


def test_preflight_says_when_the_code_was_not_staged(aws):
    from fruits.backends.emr import preflight

    cfg = emr_run_config("b")
    clients = preflight.Clients(boto3.client("s3", region_name=REGION), None, None, REGION)
    (problem,) = preflight.check_code(cfg, clients, "v0")
    assert "extract_features.py" in problem and "stage_code did not finish" in problem


def test_a_bootstrap_failure_is_reported_as_the_clusters_not_as_a_cancelled_step(
    airflow_db, runnable_dag, aws, landing, monkeypatch, capfd
):
    simulate_emr(
        monkeypatch,
        ["CANCELLED", "CANCELLED"],
        cluster_error="On the master instance, bootstrap action 1 returned a non-zero return code",
    )
    dr, states = run(runnable_dag, landing, "b-boot")
    assert dr.state == DagRunState.FAILED and states["emr.watch_extract_features"] == S.FAILED, states
    log = "".join(capfd.readouterr())
    assert "ended TERMINATED_WITH_ERRORS" in log and "bootstrap action 1 returned a non-zero return code" in log


def test_a_stderr_not_yet_copied_is_named_by_its_s3_path(aws, monkeypatch):
    from fruits.backends.emr.operators import StepSensor

    emr = boto3.client("emr", region_name=REGION)
    cluster = a_cluster(emr)
    sensor = StepSensor(
        task_id="watch", job_flow_id=cluster, step_id="s-1", aws_conn_id="aws_default", job_name="extract_features"
    )
    sensor.stderr_wait_s = 0
    assert sensor._stderr_tail(f"s3n://{BUCKET}/logs/emr/") == (
        f"the step's stderr is not in S3 yet; it is copied there within minutes: "
        f"s3://{BUCKET}/logs/emr/{cluster}/steps/s-1/stderr.gz"
    )


def test_marking_the_run_failed_stops_the_sensor_but_leaves_the_teardown_to_end_the_cluster(
    airflow_db, runnable_dag, aws, landing, monkeypatch
):
    """What the UI's "mark run as failed" does to this DAG (Airflow's own set_dag_run_state_to_failed,
    apache/airflow#45530): the running sensor is failed (its on_kill cancels the steps, tested above)
    and the teardown is neither skipped nor killed, so the run stays open until it has ended the cluster."""
    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed
    from airflow.models.taskinstance import TaskInstance
    from airflow.serialization.serialized_objects import SerializedDAG
    from airflow.settings import Session
    from sqlalchemy import select

    simulate_emr(monkeypatch, ["COMPLETED", "COMPLETED"], lambda: write_job_outputs("b-mark"))
    dr, _ = run(runnable_dag, landing, "b-mark")
    # Rewind the run to the moment a person marks it failed: features step being watched.
    midway = {
        "emr.watch_extract_features": S.RUNNING,
        "emr.watch_reduce_dimensions": None,
        "emr.terminate_cluster": None,
        "publish_summary": None,
    }
    with Session() as session:
        for ti in session.scalars(select(TaskInstance).where(TaskInstance.run_id == dr.run_id)):
            if ti.task_id in midway:
                ti.state = midway[ti.task_id]
        session.commit()
        dag = SerializedDAG.deserialize_dag(SerializedDAG.serialize_dag(runnable_dag))
        set_dag_run_state_to_failed(dag=dag, run_id=dr.run_id, commit=True, session=session)
        session.commit()
        states = {
            ti.task_id: ti.state for ti in session.scalars(select(TaskInstance).where(TaskInstance.run_id == dr.run_id))
        }
    assert states["emr.watch_extract_features"] == S.FAILED  # the task is killed: on_kill runs
    assert states["emr.watch_reduce_dimensions"] == S.SKIPPED and states["publish_summary"] == S.SKIPPED
    assert states["emr.terminate_cluster"] is None  # still to run: the cluster gets ended


def test_a_features_step_that_completes_after_its_run_gave_up_publishes_nothing(
    airflow_db, runnable_dag, aws, landing, monkeypatch
):
    """The run gives up on the features step (here its sensor fails; a killed one, or one whose worker
    died hard, ends the same way): the teardown revokes the batch's lease before it ends the cluster,
    so the step's commit, landing late with the token the job read at its start, publishes nothing."""
    from fruits.lake import published
    from fruits.lake.storage import S3Storage

    started_with = {}
    simulate_emr(  # with its stderr in the bucket: the failing sensor finds it at once
        monkeypatch, ["FAILED", "CANCELLED"], lambda: started_with.update(lease=lease_now("b-late")), stderr=b"x\n"
    )
    dr, states = run(runnable_dag, landing, "b-late")
    assert states["emr.watch_extract_features"] == S.FAILED and states["emr.terminate_cluster"] == S.SUCCESS
    write_job_outputs("b-late", started=started_with["lease"])  # the late commit: refused by the log
    storage = S3Storage(BUCKET, "aws_default")
    assert lease_token("b-late") is None and not published.is_published(storage, "b-late")
    assert "emr.watch_extract_features ended failed" in storage.read_text(layout.lease_key("b-late"))


def test_a_killed_features_sensor_revokes_the_lease_its_step_would_publish_under(aws):
    """Marking the run failed kills the running sensor (on_kill): its step may still finish before the
    teardown ends the cluster, and must publish nothing."""
    from fruits.backends.emr.operators import StepSensor
    from fruits.lake import leases, published
    from fruits.lake.storage import S3Storage

    storage = S3Storage(BUCKET, "aws_default")
    leases.issue(storage, "b-kill")
    started = lease_now("b-kill")
    emr = boto3.client("emr", region_name=REGION)
    cluster = a_cluster(emr)
    lease_uri = f"s3://{BUCKET}/{layout.lease_key('b-kill')}"
    StepSensor(
        task_id="watch",
        job_flow_id=cluster,
        step_id="s-1",
        job_name="extract_features",
        lease_uri=lease_uri,
        aws_conn_id="aws_default",
    ).on_kill()
    write_job_outputs("b-kill", started=started)
    assert lease_token("b-kill") is None and not published.is_published(storage, "b-kill")


def test_a_failed_steps_sensor_fails_with_the_line_that_says_why(aws, monkeypatch):
    """The task's own failure message ends with the cause from the step's stderr, not only 'FAILED'."""
    from airflow.exceptions import AirflowException

    from fruits.backends.emr.operators import StepSensor

    stderr = b"spark line\nTraceback (most recent call last):\n  File x\nOSError: weights file is not HDF5\nbye\n"
    simulate_emr(monkeypatch, ["FAILED"], stderr=stderr)
    emr = boto3.client("emr", region_name=REGION)
    cluster = a_cluster(emr)
    step = {
        "Name": "s",
        "ActionOnFailure": "CANCEL_AND_WAIT",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["x"]},
    }
    (step_id,) = emr.add_job_flow_steps(JobFlowId=cluster, Steps=[step])["StepIds"]
    sensor = StepSensor(task_id="watch", job_flow_id=cluster, step_id=step_id, job_name="extract_features")
    with pytest.raises(AirflowException, match="OSError: weights file is not HDF5$"):
        sensor.poke({})


def a_features_step() -> tuple[str, str]:
    """A cluster with one features step of batch b (a sensor's target): (cluster id, step id)."""
    emr = boto3.client("emr", region_name=REGION)
    cluster = a_cluster(emr)
    (step,) = emr.add_job_flow_steps(
        JobFlowId=cluster,
        Steps=[{"Name": "extract_features b", "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["true"]}}],
    )["StepIds"]
    return cluster, step


def test_a_running_steps_sensor_shows_its_jobs_progress(aws, capfd):
    """On EMR the features job writes its progress beside the features; each poke of its sensor logs it."""
    from fruits.backends.emr.operators import StepSensor

    cluster, step = a_features_step()
    uri = f"s3://{BUCKET}/batch_runs/_progress/batch_id=b.json"
    sensor = StepSensor(
        task_id="watch",
        job_flow_id=cluster,
        step_id=step,
        aws_conn_id="aws_default",
        job_name="extract_features",
        progress_uris={"extract_features": uri},
    )
    assert sensor.poke({}) is False  # moto leaves the step PENDING: still running
    assert "extract_features: no progress yet" in "".join(capfd.readouterr())
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=BUCKET,
        Key="batch_runs/_progress/batch_id=b.json",
        Body=json.dumps(
            {"done": 5000, "total": 20000, "percent": 25.0, "images_per_s": 310.5, "seconds_left": 48, "elapsed_s": 16}
        ),
    )
    assert sensor.poke({}) is False
    assert "extract_features: progress: 5000/20000 images (25.0 %), 310.5 images/s, ~48 s left" in "".join(
        capfd.readouterr()
    )


def listing_by_prefix_only(policy: dict) -> dict:
    """The Airflow policy as the stack granted it before issue 21: s3:ListBucket only for some prefixes,
    so S3 answers 403 for a missing progress file."""
    return {
        **policy,
        "Statement": [
            {**st, "Condition": {"StringLike": {"s3:prefix": ["raw/*", "manifests/*", "code/*", "models/*"]}}}
            if st.get("Action") == "s3:ListBucket"
            else st
            for st in policy["Statement"]
        ],
    }


def half_written(s3):
    s3.put_object(Bucket=BUCKET, Key="batch_runs/_progress/batch_id=b.json", Body=b'{"done": 50')
    return "is unreadable"


def not_a_progress(s3):
    s3.put_object(Bucket=BUCKET, Key="batch_runs/_progress/batch_id=b.json", Body=b'{"hello": 1}')
    return "is unreadable"


def denied(s3):
    return "answers AccessDenied"  # the file is missing, and this role may not list the bucket


@pytest.mark.parametrize(
    "airflow_policy,progress",
    [
        (template_policy("AirflowPolicy"), half_written),
        (template_policy("AirflowPolicy"), not_a_progress),
        (listing_by_prefix_only(template_policy("AirflowPolicy")), denied),
    ],
    ids=["half-written", "not-a-progress", "denied"],
)
def test_a_progress_file_that_cannot_be_read_never_fails_the_sensor(aws, capfd, airflow_policy, progress):
    """Issue 21, point 1: the progress is for the log only; the sensor says why it shows none (a
    WARNING, the step is fine) and pokes again. `denied`: S3 answers 403 for a missing key to a
    caller who may not list the bucket (the `aws` fixture applies S3's rule to the policy given)."""
    from fruits.backends.emr.operators import StepSensor

    cluster, step = a_features_step()
    says = progress(boto3.client("s3", region_name=REGION))
    sensor = StepSensor(
        task_id="watch",
        job_flow_id=cluster,
        step_id=step,
        aws_conn_id="aws_default",
        job_name="extract_features",
        progress_uris={"extract_features": f"s3://{BUCKET}/batch_runs/_progress/batch_id=b.json"},
    )
    assert sensor.poke({}) is False  # moto leaves the step PENDING: poke again
    log = "".join(capfd.readouterr())
    (line,) = [x for x in log.splitlines() if "extract_features: no progress to show" in x]
    assert says in line and "[warning" in line, line  # its level: the step is fine, not an ERROR


def test_preflight_reports_every_gap_of_a_fresh_account_at_once_each_with_its_fix(aws):
    """Issue 21, points 2 and 3, on an account as it comes: no service-linked roles, and a default VPC
    whose subnets and itself carry no tags. The pre-flight names each, with the command that fixes it,
    through the Airflow role's own clients (the `aws` fixture checks its calls against the policy)."""
    from fruits.backends.emr import preflight
    from fruits.backends.emr.tasks import preflight_clients

    iam, ec2 = boto3.client("iam", region_name=REGION), boto3.client("ec2", region_name=REGION)
    iam.delete_role(RoleName=preflight.EMR_CLEANUP_ROLE.name)  # as an account before its first cluster
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    subnets = [
        s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    ]
    ec2.delete_tags(Resources=[vpc["VpcId"], *subnets], Tags=[{"Key": "for-use-with-amazon-emr-managed-policies"}])
    cfg = emr_run_config("b", task_spot_count=2)  # a spot task group: EC2's spot role too

    problems = [
        p
        for p in preflight.run_checks(cfg, preflight_clients("aws_default"), "v0")
        if not p.startswith(("weights", "code"))
    ]

    tag = "--tags Key=for-use-with-amazon-emr-managed-policies,Value=true"
    assert len(problems) == 4, problems
    emr_role, spot_role, subnet_problem, vpc_problem = problems
    assert emr_role.startswith("service-linked role AWSServiceRoleForEMRCleanup cannot be found (NoSuchEntity)")
    assert emr_role.endswith("aws iam create-service-linked-role --aws-service-name elasticmapreduce.amazonaws.com")
    assert spot_role.endswith("aws iam create-service-linked-role --aws-service-name spot.amazonaws.com")
    assert subnet_problem.startswith("fruits_subnet_id is not set, so EMR picks a default subnet of the default VPC")
    assert subnet_problem.endswith(f"aws ec2 create-tags --region {REGION} --resources {' '.join(subnets)} {tag}")
    assert vpc_problem.startswith(f"VPC {vpc['VpcId']} ") and vpc_problem.endswith(
        f"aws ec2 create-tags --region {REGION} --resources {vpc['VpcId']} {tag}"
    )

    # What those commands do; then nothing is left but the spot role, needed only with spot nodes.
    ec2.create_tags(
        Resources=[vpc["VpcId"], *subnets], Tags=[{"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}]
    )
    role = preflight.EMR_CLEANUP_ROLE
    iam.create_role(RoleName=role.name, Path=f"/aws-service-role/{role.service}/", AssumeRolePolicyDocument="{}")
    clients = preflight_clients("aws_default")
    assert preflight.check_service_linked_roles(emr_run_config("b"), clients) == []
    assert preflight.check_network(cfg, clients) == []


def test_preflight_checks_the_vpc_of_a_tagged_subnet_too(aws, monkeypatch):
    """Issue 21, point 3: a tagged subnet is not enough; EMR creates its security groups in the VPC."""
    from fruits.backends.emr import preflight
    from fruits.backends.emr.tasks import preflight_clients

    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    ec2.create_tags(Resources=[subnet], Tags=[{"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}])
    (problem,) = preflight.check_network(emr_run_config("b", subnet_id=subnet), preflight_clients("aws_default"))
    tag = "--tags Key=for-use-with-amazon-emr-managed-policies,Value=true"
    assert problem.startswith(f"VPC {vpc} (of the cluster's subnet) lacks the tag")
    assert problem.endswith(f"aws ec2 create-tags --region {REGION} --resources {vpc} {tag}")
