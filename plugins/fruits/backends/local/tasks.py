"""The local branch of the DAG: one task that runs the jobs, in order, with a local spark-submit."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import task

from fruits.backends.base import BackendTasks
from fruits.backends.jobs import SparkJob
from fruits.backends.local import runner
from fruits.config.run import RunConfig, from_xcom


@from_xcom
def run_jobs(cfg: RunConfig, job_dicts: list) -> list:
    """The jobs, in order, with the local spark-submit; each one's wall time and JSON summary."""
    assert cfg.local is not None
    if not cfg.in_s3:
        Path(cfg.root).mkdir(parents=True, exist_ok=True)
    return runner.run_jobs([SparkJob.from_dict(d) for d in job_dicts], cfg.local.spark_master)


@task(retries=0)  # re-running Spark is a person's decision
def run_locally(cfg: dict, spark_jobs: list) -> list:
    return run_jobs(cfg, spark_jobs)


def local_tasks(cfg, plan) -> BackendTasks:
    local = run_locally(cfg, plan["jobs"])
    return BackendTasks(entry=local.operator, result_task_id=local.operator.task_id, done=[local.operator])
