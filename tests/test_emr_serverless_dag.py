"""The EMR Serverless path of the real DAG (backend emr_serverless, issue 30), run with `dag.test()`
against moto, and its operators' failure paths against botocore's Stubber.

What moto lacks is stubbed, the rest is real: moto creates an application already STARTED, with no
architecture nor image (the test gives it the stack's: X86_64 and this checkout's image), its job runs
succeed the moment they start, and it has no Service Quotas for EMR Serverless (a botocore handler
answers GetServiceQuota, as the `aws` fixture answers S3's 403s). As in test_emr_dag, the scenario's
job-run states and the jobs' outputs are set when moto starts a job run. Every AWS call the DAG makes
is checked against the Airflow policy of infra/aws/fruits.yaml (the `aws` fixture).
"""

import gzip
import json

import boto3
import pytest
from airflow.utils.state import DagRunState, TaskInstanceState
from botocore.stub import Stubber
from moto.emrserverless.models import EMRServerlessBackend, emrserverless_backends
from test_emr_dag import RUN, lease_now, lease_token, write_job_outputs

from fruits.backends.emr_serverless.builders import driver_stderr_key
from fruits.backends.emr_serverless.image import image_tag
from fruits.config.params import build_params
from fruits_jobs import layout

from airflow_fixtures import ACCOUNT, BUCKET, REGION, make_landing, xcom

S = TaskInstanceState
JOB_ROLE = f"arn:aws:iam::{ACCOUNT}:role/fruits-emr-serverless-job-role"  # the stack's ServerlessJobRole
BILLED = {"vCPUHour": 0.5, "memoryGBHour": 2.0, "storageGBHour": 1.0}
SERVERLESS_ACTIONS = {"GetApplication", "ListJobRuns", "StartJobRun", "GetJobRun"}


def answer_quota(monkeypatch, vcpus: float) -> None:
    """GetServiceQuota's answer for EMR Serverless' vCPU quota (moto has none), for clients made from now on."""
    import botocore.handlers
    from botocore.awsrequest import AWSResponse

    def answer(**_):
        quota = {"ServiceCode": "emr-serverless", "QuotaCode": "L-D05C8A75", "Value": vcpus, "Unit": "None"}
        return AWSResponse("https://servicequotas", 200, {}, None), {
            "Quota": quota,
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }

    event = "before-call.service-quotas.GetServiceQuota"
    handlers = [h for h in botocore.handlers.BUILTIN_HANDLERS if h[0] != event] + [(event, answer)]  # the latest
    monkeypatch.setattr(botocore.handlers, "BUILTIN_HANDLERS", handlers)


@pytest.fixture
def application(aws, monkeypatch) -> str:
    """The stack's application and job role on moto, and the Variables' values (env) a deployment sets."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "emr-serverless.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    boto3.client("iam", region_name=REGION).create_role(
        RoleName=JOB_ROLE.rsplit("/", 1)[1], AssumeRolePolicyDocument=json.dumps(trust)
    )
    serverless = boto3.client("emr-serverless", region_name=REGION)
    app_id = serverless.create_application(name="fruits-spark", releaseLabel="emr-7.12.0", type="SPARK")[
        "applicationId"
    ]
    backend = emrserverless_backends[ACCOUNT][REGION]
    backend.job_runs[app_id] = []  # moto answers ListJobRuns before a first job run with a 404; AWS lists none
    app = backend.applications[app_id]
    app.architecture = "X86_64"
    app.image_configuration = {"imageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/fruits-spark:{image_tag()}"}
    monkeypatch.setenv("FRUITS_SERVERLESS_APPLICATION_ID", app_id)
    monkeypatch.setenv("FRUITS_SERVERLESS_JOB_ROLE_ARN", JOB_ROLE)
    answer_quota(monkeypatch, 16)  # a new account's
    return app_id


def simulate_serverless(monkeypatch, states, write_outputs=None, stderr=None) -> list:
    """Give started job runs the scenario's states (moto: SUCCESS at once), execution times and billed
    resources; with write_outputs, the jobs' outputs when the first starts; with stderr, the driver's
    log of each failed run where EMR Serverless puts it. Returns moto's job runs, in start order."""
    original = EMRServerlessBackend.start_job_run
    started = []

    def start_job_run(self, *args, **kwargs):
        job_run = original(self, *args, **kwargs)
        job_run.state = states[len(started)] if len(started) < len(states) else "SUCCESS"
        job_run.total_execution_duration_seconds = 4 if not started else 2
        job_run.billed_resource_utilization = dict(BILLED)
        if job_run.state == "FAILED":
            job_run.state_details = "Job failed, please check complete logs in configured logging destination."
            if stderr is not None:
                key = driver_stderr_key(job_run.application_id, job_run.id)
                boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(stderr))
        if not started and write_outputs:
            write_outputs()
        started.append(job_run)
        return job_run

    monkeypatch.setattr(EMRServerlessBackend, "start_job_run", start_job_run)
    return started


def run(dag, landing, batch_id, **conf):
    defaults = {name: param.value for name, param in build_params().items()}
    dr = dag.test(
        run_conf={**defaults, "backend": "emr_serverless", "landing_dir": str(landing), "batch_id": batch_id, **conf}
    )
    return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}


@pytest.fixture
def landing(tmp_path):
    make_landing(tmp_path / "landing")
    return tmp_path / "landing"


def test_completed_job_runs_publish_the_summary_with_their_billed_resources(
    airflow_db, runnable_dag, application, aws, landing, monkeypatch
):
    started = simulate_serverless(monkeypatch, ["SUCCESS", "SUCCESS"], lambda: write_job_outputs("s-ok"))
    dr, states = run(runnable_dag, landing, "s-ok", pca_k=3)
    assert dr.state == DagRunState.SUCCESS, states
    ours = {t: s for t, s in states.items() if t.startswith("emr_serverless.")}
    assert ours == {
        "emr_serverless.preflight": S.SUCCESS,
        "emr_serverless.start_extract_features": S.SUCCESS,
        "emr_serverless.watch_extract_features": S.SUCCESS,
        "emr_serverless.start_reduce_dimensions": S.SUCCESS,
        "emr_serverless.watch_reduce_dimensions": S.SUCCESS,
        "emr_serverless.end_runs": S.SUCCESS,
    }
    assert {t for t, s in states.items() if s == S.SKIPPED} == {t for t in states if t.startswith(("emr.", "run_l"))}
    # One job run per job, as the plan rendered it: the job role, the logs in the bucket, the job's timeout.
    assert [(r.name.split()[0], r.execution_role_arn, r.execution_timeout_minutes) for r in started] == [
        ("extract_features", JOB_ROLE, 360),
        ("reduce_dimensions", JOB_ROLE, 120),
    ]
    logs = started[0].configuration_overrides["monitoringConfiguration"]["s3MonitoringConfiguration"]["logUri"]
    assert logs == f"s3://{BUCKET}/logs/emr-serverless/"
    assert started[0].job_driver["sparkSubmit"]["entryPoint"].endswith("/extract_features.py")
    summary = xcom(dr, "publish_summary")
    assert summary["images"]["featurized"] == 10 and summary["pca"]["space"] == RUN
    report = summary["run_report"]
    assert report["backend"] == "emr_serverless" and report["application_id"] == application
    assert report["job_runs"] == {
        "extract_features": {"id": started[0].id, "state": "SUCCESS"},
        "reduce_dimensions": {"id": started[1].id, "state": "SUCCESS"},
    }
    assert report["wall_s"] == {"extract_features": 4, "reduce_dimensions": 2, "total": 6}
    assert report["billed"] == {"vcpu_hour": 1.0, "memory_gb_hour": 4.0, "storage_gb_hour": 2.0}
    # eu-west-1 has no row in serverless_prices.json: the report says which row to add, not a made-up figure
    assert report["cost"]["run_usd"] is None and "eu-west-1" in report["cost"]["missing"]
    assert {op for service, op, _ in aws if service == "emr-serverless"} == SERVERLESS_ACTIONS
    assert not [c for c in aws if c[0] == "emr"]  # no cluster


def test_a_failed_features_job_run_fails_the_run_says_why_and_publishes_nothing(
    airflow_db, runnable_dag, application, aws, landing, monkeypatch, capfd
):
    """The sensor fails with the driver's stderr tail in its log and its cause as the failure; the PCA
    never starts; the teardown revokes the lease, so a late commit of the job publishes nothing."""
    from fruits.lake import published
    from fruits.lake.storage import S3Storage

    stderr = "\n".join(f"spark line {i}" for i in range(80)) + "\nOSError: weights file is not HDF5\n"
    lease = {}
    started = simulate_serverless(
        monkeypatch, ["FAILED"], lambda: lease.update(now=lease_now("s-fail")), stderr=stderr.encode()
    )
    dr, states = run(runnable_dag, landing, "s-fail")
    assert dr.state == DagRunState.FAILED
    assert states["emr_serverless.watch_extract_features"] == S.FAILED
    assert states["emr_serverless.start_reduce_dimensions"] == S.UPSTREAM_FAILED
    assert states["emr_serverless.end_runs"] == S.SUCCESS and states["publish_summary"] == S.UPSTREAM_FAILED
    assert len(started) == 1
    log = "".join(capfd.readouterr())
    assert f"({started[0].id}) on application {application} is FAILED" in log
    assert "spark line 79" in log and "spark line 20\n" not in log and "OSError: weights file is not HDF5" in log
    write_job_outputs("s-fail", started=lease["now"])  # the job's commit, landing after the run gave up
    storage = S3Storage(BUCKET, "aws_default")
    assert lease_token("s-fail") is None and not published.is_published(storage, "s-fail")
    assert "watch_extract_features ended failed" in storage.read_text(layout.lease_key("s-fail"))


def test_preflight_names_every_gap_and_starts_no_job_run(
    airflow_db, runnable_dag, application, aws, landing, monkeypatch, capfd
):
    """The application runs EMR's own image, and the account's quota is below the run's request: both
    said at once, each with its fix, before anything starts."""
    del emrserverless_backends[ACCOUNT][REGION].applications[application].image_configuration
    answer_quota(monkeypatch, 8)
    started = simulate_serverless(monkeypatch, [])
    dr, states = run(runnable_dag, landing, "s-pre")
    assert dr.state == DagRunState.FAILED and states["emr_serverless.preflight"] == S.FAILED
    assert started == [] and not [c for c in aws if c[1] == "StartJobRun"]
    log = "".join(capfd.readouterr())
    assert "no job run was started; change these first:" in log
    assert "runs EMR's default image (Python 3.9, none of the jobs' lock)" in log
    assert f"deploy the stack with ServerlessImageTag={image_tag()}" in log
    assert "job extract_features asks for up to 16 vCPUs and the account's EMR Serverless quota is 8" in log


# ---- the operators' failure paths, against botocore's Stubber ----------------------------------------


def job_run(state: str, details: str = "Job is running.") -> dict:
    """GetJobRun's answer, as botocore's model requires it."""
    return {
        "jobRun": {
            "applicationId": "00app",
            "jobRunId": "00run",
            "name": "extract_features b 0123456789ab",
            "arn": f"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/00app/jobruns/00run",
            "createdBy": f"arn:aws:iam::{ACCOUNT}:role/airflow",
            "createdAt": "2026-12-07T00:00:00Z",
            "updatedAt": "2026-12-07T00:10:00Z",
            "executionRole": JOB_ROLE,
            "state": state,
            "stateDetails": details,
            "releaseLabel": "emr-7.12.0",
            "jobDriver": {"sparkSubmit": {"entryPoint": "s3://b/code/v/extract_features.py"}},
        }
    }


def a_sensor(**kwargs):
    from fruits.backends.emr_serverless.operators import JobRunSensor

    sensor = JobRunSensor(
        task_id="watch_extract_features",
        job_name="extract_features",
        application_id="00app",
        job_run_id="00run",
        bucket=BUCKET,
        aws_conn_id="aws_default",
        **kwargs,
    )
    sensor.stderr_wait_s = 0
    return sensor, Stubber(sensor.hook.conn)


GET = {"applicationId": "00app", "jobRunId": "00run"}


def test_a_failed_job_run_fails_its_sensor_with_the_driver_s_last_line(aws):
    from airflow.exceptions import AirflowException

    key = driver_stderr_key("00app", "00run")
    body = gzip.compress(b"Traceback (most recent call last):\n  File x\nValueError: no photo is readable\n")
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=key, Body=body)
    sensor, stub = a_sensor()
    stub.add_response("get_job_run", job_run("FAILED", "Job failed"), GET)  # the poke
    stub.add_response("get_job_run", job_run("FAILED", "Job failed"), GET)  # the explanation
    with stub, pytest.raises(AirflowException, match="ValueError: no photo is readable$"):
        sensor.poke({})
    stub.assert_no_pending_responses()


def test_a_cancelled_job_run_fails_its_sensor_and_says_where_its_log_will_be(aws, capfd):
    from airflow.exceptions import AirflowException

    sensor, stub = a_sensor()
    stub.add_response("get_job_run", job_run("CANCELLED", "Job run cancelled by user"), GET)
    stub.add_response("get_job_run", job_run("CANCELLED", "Job run cancelled by user"), GET)
    with stub, pytest.raises(AirflowException, match="Job run cancelled by user"):
        sensor.poke({})
    log = "".join(capfd.readouterr())
    assert f"s3://{BUCKET}/{driver_stderr_key('00app', '00run')}" in log  # not copied yet: where it will be


def test_a_running_job_run_keeps_its_sensor_waiting_and_shows_progress(aws, capfd):
    sensor, stub = a_sensor(progress_uris={"extract_features": f"s3://{BUCKET}/batch_runs/_progress/batch_id=b.json"})
    stub.add_response("get_job_run", job_run("RUNNING"), GET)
    with stub:
        assert sensor.poke({}) is False
    assert "extract_features: no progress yet" in "".join(capfd.readouterr())


def test_a_killed_sensor_cancels_its_job_run_and_revokes_the_lease_it_would_publish_under(aws):
    from fruits.lake import leases, published
    from fruits.lake.storage import S3Storage

    storage = S3Storage(BUCKET, "aws_default")
    leases.issue(storage, "s-kill")
    started = lease_now("s-kill")
    sensor, stub = a_sensor(lease_uri=f"s3://{BUCKET}/{layout.lease_key('s-kill')}")
    stub.add_response("get_job_run", job_run("RUNNING"), GET)
    stub.add_response("cancel_job_run", {"applicationId": "00app", "jobRunId": "00run"}, GET)
    with stub:
        sensor.on_kill()
    stub.assert_no_pending_responses()
    write_job_outputs("s-kill", started=started)  # the job's commit, if it lands before the cancel
    assert lease_token("s-kill") is None and not published.is_published(storage, "s-kill")


def test_a_job_run_that_ended_is_not_cancelled_again(aws):
    sensor, stub = a_sensor()
    stub.add_response("get_job_run", job_run("SUCCESS"), GET)
    with stub:  # no CancelJobRun queued: calling it would fail the test
        sensor.on_kill()
    stub.assert_no_pending_responses()


def quota_clients(stub_quota):
    from fruits.backends.emr_serverless.preflight import Clients

    quotas = boto3.client("service-quotas", region_name=REGION)
    stub = Stubber(quotas)
    stub_quota(stub)
    stub.activate()
    return Clients(None, None, None, quotas, REGION)


def test_the_quota_check_compares_the_largest_job_with_the_account_s_quota():
    from fruits.backends import jobs
    from fruits.backends.emr_serverless.preflight import QUOTA, check_quota

    from airflow_fixtures import emr_run_config

    planned = jobs.plan_jobs(emr_run_config(), "v")
    answer = {"Quota": {**QUOTA, "Value": 16.0}}
    assert check_quota(planned, quota_clients(lambda s: s.add_response("get_service_quota", answer, QUOTA))) == []
    low = {"Quota": {**QUOTA, "Value": 12.0}}
    (problem,) = check_quota(planned, quota_clients(lambda s: s.add_response("get_service_quota", low, QUOTA)))
    assert "asks for up to 16 vCPUs" in problem and "quota is 12" in problem and "maxExecutors" in problem
    (denied,) = check_quota(
        planned, quota_clients(lambda s: s.add_client_error("get_service_quota", "AccessDeniedException"))
    )
    assert "AccessDeniedException" in denied and "servicequotas:GetServiceQuota" in denied


def test_a_retried_start_reuses_the_live_job_run_its_dag_run_started(application, aws):
    """A retry of a start task (its worker died after StartJobRun) finds the job run by its name, which
    holds the DAG run's digest (builders.job_run_name), instead of paying for a second one."""
    from fruits.backends.emr_serverless.builders import job_run_name
    from fruits.backends.emr_serverless.operators import StartJobRunOnce

    serverless = boto3.client("emr-serverless", region_name=REGION)
    name = job_run_name("extract_features", "b", "manual__2026-12-07")
    driver = {"sparkSubmit": {"entryPoint": f"s3://{BUCKET}/code/v/extract_features.py"}}
    for run_name in (name, job_run_name("extract_features", "b", "another run")):
        serverless.start_job_run(
            applicationId=application, executionRoleArn=JOB_ROLE, jobDriver=driver, name=run_name, clientToken=run_name
        )
    for run in emrserverless_backends[ACCOUNT][REGION].job_runs[application]:
        run.state = "RUNNING"
    (live,) = [r.id for r in emrserverless_backends[ACCOUNT][REGION].job_runs[application] if r.name == name]
    start = StartJobRunOnce(
        task_id="start_extract_features",
        job_name="extract_features",
        job_run={"name": name, "job_driver": driver, "configuration_overrides": {}, "config": {}},
        application_id=application,
        execution_role_arn=JOB_ROLE,
        aws_conn_id="aws_default",
    )
    assert start.execute({}) == live
    assert [c[1] for c in aws if c[0] == "emr-serverless"] == ["ListJobRuns"]  # no StartJobRun
