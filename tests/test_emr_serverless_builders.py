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
    return {
        "applicationId": "00fakeapp",
        "clientToken": "run-1",
        "executionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/fruits-emr-serverless-job-role",
        "jobDriver": serverless.job_driver(job),
        "configurationOverrides": serverless.configuration_overrides(BUCKET),
        "name": job.name,
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
