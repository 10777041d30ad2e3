"""The EMR Serverless branch of the DAG: pre-flight, then per job a start (the provider's operator) and
a sensor, and the teardown that ends whatever still runs and fences a batch the run gave up on."""

from __future__ import annotations

import logging

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook
from airflow.sdk import TaskGroup, chain, task

from fruits.backends.base import BackendTasks
from fruits.backends.emr.preflight import PreflightFailed
from fruits.backends.emr_serverless import builders
from fruits.backends.emr_serverless import preflight as checks
from fruits.backends.emr_serverless.operators import LIVE, JobRunSensor, StartJobRunOnce, cancel_if_live
from fruits.backends.jobs import JOBS, SparkJob
from fruits.backends.watching import revoke_lease
from fruits.config.run import RunConfig, from_xcom, serverless_of

log = logging.getLogger(__name__)
GROUP = "emr_serverless"
WATCHER = f"watch_{JOBS[0].name}"  # the sensor of the job that publishes the batch


def preflight_clients(aws_conn_id: str) -> checks.Clients:
    """The pre-flight's clients, through the connection (its region is the one checked)."""
    hooks = {
        kind: AwsBaseHook(aws_conn_id=aws_conn_id, client_type=kind)
        for kind in ("s3", "iam", "emr-serverless", "service-quotas")
    }
    return checks.Clients(
        hooks["s3"].conn,
        hooks["iam"].conn,
        hooks["emr-serverless"].conn,
        hooks["service-quotas"].conn,
        hooks["s3"].conn_region_name,
    )


@from_xcom
def run_preflight(cfg: RunConfig, version: str, job_dicts: list) -> None:
    """Fail with every problem a job run would hit, before one starts."""
    jobs = [SparkJob.from_dict(d) for d in job_dicts]
    problems = checks.run_checks(cfg, preflight_clients(cfg.aws_conn_id), version, jobs)
    if problems:
        raise PreflightFailed("no job run was started; change these first:\n" + "\n".join(f"  - {p}" for p in problems))
    log.info("pre-flight: bucket, weights, application, image, job role, vCPU quota and code are ready")


@from_xcom
def end_job_runs(cfg: RunConfig, lease_uri: str, job_run_ids: dict, watcher_state: str | None) -> dict:
    """Cancel the run's job runs that still run, and revoke the batch's lease (plan_jobs' `lease`) when
    the sensor of the job that publishes it did not succeed (failed, killed, or its worker died without
    running on_kill); returns the job runs, for the run report."""
    application_id = serverless_of(cfg).application_id
    if watcher_state != "success":
        revoke_lease(lease_uri, cfg.aws_conn_id, f"{WATCHER} ended {watcher_state}")
        log.warning("%s ended %s: revoked %s, this run publishes nothing", WATCHER, watcher_state, lease_uri)
    client = EmrServerlessHook(aws_conn_id=cfg.aws_conn_id).conn
    for job, job_run_id in job_run_ids.items():
        if job_run_id and cancel_if_live(client, application_id, job_run_id) in LIVE:
            log.warning("%s: cancelled job run %s, which was still running", job, job_run_id)
    return {"application_id": application_id, "job_runs": job_run_ids}


@task(retries=0)  # a setting to change will not change by itself
def preflight(cfg: dict, version: str, jobs: list) -> None:
    run_preflight(cfg, version, jobs)


@task
def end_runs(cfg: dict, lease_uri: str, **context) -> dict:
    ti, run_id = context["ti"], context["run_id"]
    starts = {job.name: f"{GROUP}.start_{job.name}" for job in JOBS}
    ids = {job: ti.xcom_pull(task_ids=task_id) for job, task_id in starts.items()}
    states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[f"{GROUP}.{WATCHER}"], run_ids=[run_id])
    return end_job_runs(cfg, lease_uri, ids, states.get(run_id, {}).get(f"{GROUP}.{WATCHER}"))


def serverless_tasks(cfg, version, plan) -> BackendTasks:
    with TaskGroup(GROUP, tooltip="does nothing (skipped) unless backend=emr_serverless"):
        checked = preflight(cfg, version, plan["jobs"])
        starts, watchers = [], []
        for job in JOBS:
            start = StartJobRunOnce(
                task_id=f"start_{job.name}",
                job_name=job.name,
                job_run=plan[f"job_run_{job.name}"],
                application_id=plan["application_id"],
                execution_role_arn=plan["job_role_arn"],
                # a STOPPED application is started first: wait for it up to 20 minutes
                waiter_delay=30,
                waiter_max_attempts=40,
            )
            watch = JobRunSensor(
                task_id=f"watch_{job.name}",
                job_name=job.name,
                application_id=plan["application_id"],
                job_run_id=start.output,
                bucket=plan["bucket"],
                progress_uris=plan["progress"],  # its log shows the job's progress on each poke
                # killed, it revokes the lease its job publishes under
                lease_uri=plan["lease"] if job == JOBS[0] else None,
                poke_interval=builders.POKE_INTERVAL_S,
                timeout=builders.sensor_timeout_s(job.timeout_s),  # longer than the job's executionTimeoutMinutes
                mode="reschedule",  # between pokes the worker slot is free
                retries=0,  # a FAILED job run stays failed; throttling is retried inside botocore
            )
            starts.append(start)
            watchers.append(watch)
        # Setups: the job runs. Clearing a sensor clears its start too, so it runs a fresh job run, and the
        # teardown ends what still runs.
        ended = end_runs(cfg, plan["lease"]).as_teardown(setups=starts)
        chain(checked, *[task for pair in zip(starts, watchers, strict=True) for task in pair], ended)
    # publish_summary comes after the teardown: the run report reads the job runs it returns.
    return BackendTasks(
        entry=checked.operator, result_task_id=ended.operator.task_id, done=[watchers[-1], ended.operator]
    )
