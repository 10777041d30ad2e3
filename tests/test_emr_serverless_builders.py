"""The pure EMR Serverless builders (backend emr_serverless, issue 30): a StartJobRun request per job
that botocore's model accepts, the same job as the EMR step, logs where the job role may write them,
and the vCPU quota checked before anything starts."""

import dataclasses

import pytest
from botocore.session import get_session
from botocore.validate import ParamValidator

from fruits.backends import jobs
from fruits.backends.emr import builders as emr
from fruits.backends.emr_serverless import builders as serverless

from airflow_fixtures import ACCOUNT, BUCKET, REGION, emr_run_config
from cfn_template import Stack
from iam_eval import is_allowed

CFG = emr_run_config()
VERSION = "abc123def456"
JOBS = jobs.plan_jobs(CFG, VERSION)


def start_job_run(job) -> dict:
    """The request EmrServerlessStartJobOperator sends for the job run the plan renders."""
    run = serverless.job_run(job, BUCKET, CFG.batch_id, "manual__2026-12-07T00:00:00+00:00")
    return {
        "applicationId": "00fakeapp",
        "clientToken": "run-1",
        "executionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/fruits-emr-serverless-job-role",
        "jobDriver": run["job_driver"],
        "configurationOverrides": run["configuration_overrides"],
        "name": run["name"],
        **run["config"],
    }


def test_each_job_is_a_start_job_run_request_botocore_accepts():
    model = get_session().get_service_model("emr-serverless").operation_model("StartJobRun")
    for job in JOBS:
        report = ParamValidator().validate(start_job_run(job), model.input_shape)
        assert not report.has_errors(), report.generate_report()


def test_the_job_run_runs_what_the_emr_step_runs_with_the_image_s_python():
    for job, step in zip(JOBS, emr.spark_steps(JOBS, CFG.batch_id), strict=True):
        submit = serverless.job_driver(job)["sparkSubmit"]
        step_args = step["HadoopJarStep"]["Args"]
        entry = step_args.index(job.entrypoint)
        assert (submit["entryPoint"], submit["entryPointArguments"]) == (job.entrypoint, step_args[entry + 1 :])
        params = submit["sparkSubmitParameters"].split()
        confs = dict(params[i + 1].split("=", 1) for i, word in enumerate(params) if word == "--conf")
        assert job.conf.items() <= confs.items()  # the job's own settings
        assert confs["spark.emr-serverless.driverEnv.PYSPARK_PYTHON"] == serverless.PYTHON
        assert confs["spark.executorEnv.PYSPARK_PYTHON"] == serverless.PYTHON
        if job.py_files:
            assert params[params.index("--py-files") + 1] == ",".join(job.py_files)


def test_a_setting_with_whitespace_is_refused_not_split():
    job = dataclasses.replace(JOBS[0], conf={"spark.driver.extraJavaOptions": "-Da=1 -Db=2"})
    with pytest.raises(ValueError, match="spark.driver.extraJavaOptions"):
        serverless.job_driver(job)


def test_the_driver_log_lands_where_the_job_role_may_write_and_airflow_may_read():
    log_uri = serverless.configuration_overrides(BUCKET)["monitoringConfiguration"]["s3MonitoringConfiguration"]
    key = serverless.driver_stderr_key("00fakeapp", "00fakerun")
    assert f"s3://{BUCKET}/{key}".startswith(log_uri["logUri"]) and key.endswith("/SPARK_DRIVER/stderr.gz")
    job_role_logs = Stack(BUCKET, account=ACCOUNT, region=REGION).documents()["ServerlessJobRole.WriteTheJobsLogs"]
    assert is_allowed(job_role_logs, "s3:PutObject", f"arn:aws:s3:::{BUCKET}/{key}", {})


def test_a_run_asks_for_at_most_a_new_account_s_16_vcpus_and_a_smaller_quota_is_named_before_it_starts():
    assert max(serverless.vcpus_requested(job) for job in JOBS) == 16
    assert serverless.quota_problem(JOBS, 16.0) is None
    problem = serverless.quota_problem(JOBS, 8.0)
    assert problem and "16 vCPUs" in problem and "quota is 8" in problem and "maxExecutors" in problem


def test_the_service_ends_a_job_that_outlives_its_timeout_and_the_sensor_waits_longer():
    for job in JOBS:
        request = start_job_run(job)
        assert request["executionTimeoutMinutes"] * 60 == job.timeout_s
        assert serverless.sensor_timeout_s(job.timeout_s) > job.timeout_s
    # one name per job and DAG run: what a retried start looks for (StartJobRunOnce)
    names = {serverless.job_run_name(j.name, "b", r) for j in JOBS for r in ("run-1", "run-2")}
    assert len(names) == 4 and all(len(n) <= 256 for n in names)


def test_the_image_tag_follows_the_dockerfile_and_the_lock(tmp_path, monkeypatch):
    from fruits.backends.emr_serverless import image

    from airflow_fixtures import REPO

    tag = image.image_tag()
    assert tag.startswith("jobs-") and image.tag_of(f"1.dkr.ecr.eu-west-1.amazonaws.com/r:{tag}") == tag
    assert image.tag_of("1.dkr.ecr.eu-west-1.amazonaws.com/r") is None
    assert image.tag_of("localhost:5000/r:t1@sha256:ab") == "t1"
    for changed in (image.DOCKERFILE, "spark_jobs/requirements.lock"):
        copy = tmp_path / changed.replace("/", "_")
        for path in (image.DOCKERFILE, "spark_jobs/requirements.lock", "spark_jobs/bootstrap/emr_bootstrap.sh"):
            (copy / path).parent.mkdir(parents=True, exist_ok=True)
            (copy / path).write_bytes((REPO / path).read_bytes() + (b"# changed\n" if path == changed else b""))
        monkeypatch.setenv("FRUITS_REPO", str(copy))
        assert image.image_tag() != tag, changed


def test_the_image_runs_the_jobs_lock_with_python_3_11_on_the_application_s_release():
    """The parity rule on EMR Serverless: the image's venv is the one the job runs (builders.PYTHON),
    with the lock the tests ran; its base is the release of the stack's application, pinned at build
    (never `latest`, refused by make serverless-image)."""
    import re
    import subprocess

    from fruits.backends.emr_serverless import image
    from fruits.config.settings import DEFAULTS

    from airflow_fixtures import REPO
    from cfn_template import Stack

    text = (REPO / image.DOCKERFILE).read_text()
    release = Stack(BUCKET).resources["ServerlessApplication"]["Properties"]["ReleaseLabel"]
    assert release == DEFAULTS["release_label"]
    assert re.search(rf"^FROM public\.ecr\.aws/emr-serverless/spark/{re.escape(release)}:\$\{{BASE_TAG\}}$", text, re.M)
    assert re.search(r"^ARG BASE_TAG$", text, re.M)  # no default tag
    assert "COPY spark_jobs/requirements.lock /opt/fruits/requirements.lock" in text
    assert f"python3.11 -m venv {serverless.PYTHON.removesuffix('/bin/python')}" in text
    assert text.rstrip().endswith("USER hadoop:hadoop")
    script = REPO / "docker" / "emr-serverless" / "build-and-push.sh"
    for args, message in (
        (["", "20251201", "jobs-1"], "SERVERLESS_REPOSITORY"),
        (["1.dkr.ecr.eu-west-1.amazonaws.com/r", "latest", "jobs-1"], "not latest"),
    ):
        done = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 2 and message in done.stderr
    assert "--platform linux/amd64" in script.read_text()


def test_the_run_report_prices_the_billed_resources_at_the_dated_list_prices():
    from fruits.backends.emr_serverless import report

    prices = report.load_prices()
    assert prices["as_of"] and prices["source"].startswith("https://aws.amazon.com/emr/pricing")
    runs = {
        "extract_features": {
            "jobRunId": "r1",
            "state": "SUCCESS",
            "totalExecutionDurationSeconds": 600,
            "billedResourceUtilization": {"vCPUHour": 2.0, "memoryGBHour": 8.0, "storageGBHour": 40.0},
        },
        "reduce_dimensions": {
            "jobRunId": "r2",
            "state": "SUCCESS",
            "totalExecutionDurationSeconds": 120,
            "billedResourceUtilization": {"vCPUHour": 0.5, "memoryGBHour": 2.0, "storageGBHour": 10.0},
        },
    }
    app = {"applicationId": "00app", "releaseLabel": "emr-7.12.0"}
    images = {"extract_features": 3000, "reduce_dimensions": 3000}
    run = report.serverless_report(app, runs, images, prices, "us-east-1")
    rates = prices["regions"]["us-east-1"]
    expected = 2.5 * rates["vcpu_hour"] + 10.0 * rates["memory_gb_hour"] + 50.0 * rates["storage_gb_hour"]
    assert run["billed"] == {"vcpu_hour": 2.5, "memory_gb_hour": 10.0, "storage_gb_hour": 50.0}
    assert run["cost"]["run_usd"] == pytest.approx(expected, abs=1e-4)
    assert run["cost"]["per_1000_images_usd"] == pytest.approx(1000 * expected / 3000, abs=1e-4)
    assert run["wall_s"] == {"extract_features": 600, "reduce_dimensions": 120, "total": 720}
    assert run["images_per_s"] == {"extract_features": 5.0, "reduce_dimensions": 25.0}
    lines = report.serverless_lines(run)
    assert "00app (emr-7.12.0)" in lines[0] and "2.5 vCPU-h" in lines[1]
    # a run without photos: the PCA's job run alone
    alone = report.serverless_report(app, {"extract_features": None, **runs}, {}, prices, "us-east-1")
    assert set(alone["job_runs"]) == {"extract_features", "reduce_dimensions"}
    missing = report.serverless_report(app, runs, {}, prices, "ap-south-2")["cost"]
    assert missing["run_usd"] is None and "ap-south-2" in missing["missing"]
