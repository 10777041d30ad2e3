"""Pure builders of EMR Serverless job runs, from the run's backend-neutral SparkJobs (backends/jobs.py).

References (EMR Serverless API Reference, StartJobRun: jobDriver.sparkSubmit takes an entryPoint, its
entryPointArguments, and sparkSubmitParameters, one string of spark-submit options; User Guide,
"Storing logs": with s3MonitoringConfiguration a run's driver log is
<logUri>/applications/<application id>/jobs/<job run id>/SPARK_DRIVER/stderr.gz; "Spark job
properties": spark.emr-serverless.driverEnv.* and spark.executorEnv.* set the processes' environment).
"""

import dataclasses
import hashlib
import math
import re

from fruits.backends.jobs import SparkJob, submit_args

# The workers' image keeps the jobs' Python and their lock in a venv (docker/emr-serverless/Dockerfile):
# the image's own python3 is 3.9.
PYTHON = "/opt/fruits-venv/bin/python"

# Worker shape: 4 vCPU each (EMR Serverless takes 1, 2, 4, 8 or 16), the executor layout of the EMR
# backend (two tasks of 2 cores, the model off-heap in the Python worker), and at most 3 executors, so
# that a run asks for 4 + 3 x 4 = 16 vCPUs: a new account's quota (checked before the run starts).
WORKER_CONF = {
    "spark.driver.cores": "4",
    "spark.driver.memory": "4g",
    "spark.driver.memoryOverhead": "6g",
    "spark.executor.cores": "4",
    "spark.task.cpus": "2",
    "spark.executor.memory": "4g",
    "spark.executor.memoryOverhead": "6g",
    "spark.dynamicAllocation.maxExecutors": "3",
    "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": PYTHON,
    "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON": PYTHON,
    "spark.executorEnv.PYSPARK_PYTHON": PYTHON,
}

_BLANK = re.compile(r"\s")


def submit_parameters(job: SparkJob) -> str:
    """sparkSubmitParameters: spark-submit's options for the job (jobs.submit_args: its --py-files and
    every --conf, the worker shape's then its own), one string the service splits on whitespace; a
    value holding whitespace is refused."""
    conf = {**WORKER_CONF, **job.conf}
    blank = sorted(key for key, value in conf.items() if _BLANK.search(f"{key}{value}"))
    if blank or any(_BLANK.search(uri) for uri in job.py_files):
        raise ValueError(f"job {job.name}: sparkSubmitParameters cannot hold whitespace ({blank or job.py_files})")
    options = submit_args(dataclasses.replace(job, conf=conf))[: -(len(job.args) + 1)]  # not the entry point
    return " ".join(options)


def job_driver(job: SparkJob) -> dict:
    return {
        "sparkSubmit": {
            "entryPoint": job.entrypoint,
            "entryPointArguments": list(job.args),
            "sparkSubmitParameters": submit_parameters(job),
        }
    }


LOGS = "logs/emr-serverless/"  # the job role may write there (infra/aws/fruits.yaml, ServerlessJobRole)


def configuration_overrides(bucket: str) -> dict:
    return {"monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": f"s3://{bucket}/{LOGS}"}}}


def driver_stderr_key(application_id: str, job_run_id: str) -> str:
    """Where a job run's driver stderr lands in the bucket (gzip), under configuration_overrides' logUri."""
    return f"{LOGS}applications/{application_id}/jobs/{job_run_id}/SPARK_DRIVER/stderr.gz"


def vcpus_requested(job: SparkJob) -> int:
    """The most vCPUs the job run may hold at once: its driver and its largest set of executors."""
    conf = {**WORKER_CONF, **job.conf}
    executors = int(conf["spark.dynamicAllocation.maxExecutors"])
    return int(conf["spark.driver.cores"]) + executors * int(conf["spark.executor.cores"])


def quota_problem(jobs: list[SparkJob], quota_vcpus: float) -> str | None:
    """Why the account's EMR Serverless vCPU quota cannot run these jobs (None: it can). The jobs run
    one after the other, so the largest one must fit."""
    largest = max(jobs, key=vcpus_requested, default=None)
    if largest is None or vcpus_requested(largest) <= quota_vcpus:
        return None
    return (
        f"job {largest.name} asks for up to {vcpus_requested(largest)} vCPUs and the account's EMR Serverless "
        f"quota is {quota_vcpus:g}: ask for more (Service Quotas, 'Max concurrent vCPUs') or lower "
        "spark.dynamicAllocation.maxExecutors"
    )


# The sensors wait the job's own timeout plus this: the application's start (a few minutes with a
# custom image) and the wait for workers, so the service's executionTimeoutMinutes ends a job that
# runs too long, not the sensor (a sensor that gave up would leave the job running).
START_WAIT_S = 30 * 60
POKE_INTERVAL_S = 60


def job_run_name(job_name: str, batch_id: str, run_id: str) -> str:
    """The job run's name: the job, the batch, and a digest of the DAG run (a retry of the start task
    finds the live job run of its DAG run by this name; StartJobRun's name: 1 to 256 characters)."""
    return f"{job_name} {batch_id} {hashlib.sha256(run_id.encode()).hexdigest()[:12]}"


def job_run(job: SparkJob, bucket: str, batch_id: str, run_id: str) -> dict:
    """What StartJobRun needs for one job besides the application and the role."""
    return {
        "name": job_run_name(job.name, batch_id, run_id),
        "job_driver": job_driver(job),
        "configuration_overrides": configuration_overrides(bucket),
        # the service cancels a run that outlives it (the job's own timeout, as on EMR)
        "config": {"executionTimeoutMinutes": math.ceil(job.timeout_s / 60)},
    }


def sensor_timeout_s(job_timeout_s: int) -> int:
    return job_timeout_s + START_WAIT_S
