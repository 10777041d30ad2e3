"""The EMR branch of the DAG: pre-flight, a cluster, both steps in one call, a sensor per step, and
the teardown that always ends the cluster."""

from __future__ import annotations

import logging

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.emr import EmrHook
from airflow.sdk import TaskGroup, chain, task

from fruits.backends.base import BackendTasks
from fruits.backends.emr import builders, clusters
from fruits.backends.emr import preflight as checks
from fruits.backends.emr.operators import CreateClusterOnce, StepSensor, TerminateAndFence
from fruits.backends.jobs import JOBS, JobDef
from fruits.config.run import RunConfig, emr_deferrable, from_xcom

log = logging.getLogger(__name__)


def preflight_clients(aws_conn_id: str) -> checks.Clients:
    """The pre-flight's clients, through the connection (its region is the one checked)."""
    hooks = {kind: AwsBaseHook(aws_conn_id=aws_conn_id, client_type=kind) for kind in ("s3", "iam", "ec2")}
    return checks.Clients(hooks["s3"].conn, hooks["iam"].conn, hooks["ec2"].conn, hooks["ec2"].conn_region_name)


@from_xcom
def run_preflight(cfg: RunConfig, version: str) -> None:
    """Fail with every problem a cluster would hit, before one is created."""
    problems = checks.run_checks(cfg, preflight_clients(cfg.aws_conn_id), version)
    if problems:
        raise checks.PreflightFailed(
            "no cluster was started; change these first:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    log.info("pre-flight: bucket, weights, roles, service-linked roles, network, instance types and code are ready")


@from_xcom
def add_missing_steps(cfg: RunConfig, cluster_id: str, steps: list, planned: list) -> dict:
    """The steps not yet on the cluster, in one AddJobFlowSteps call (a retry, or a reused cluster,
    keeps the steps an earlier try added); returns {job name: step id} for the sensors, None for a
    job this run did not plan (a run without photos runs the PCA alone)."""
    step_ids = clusters.add_steps_once(EmrHook(aws_conn_id=cfg.aws_conn_id).conn, cluster_id, steps)
    log.info("steps of %s: %s", cluster_id, step_ids)
    by_job = dict(zip([job["name"] for job in planned], step_ids, strict=True))
    return {job.name: by_job.get(job.name) for job in JOBS}


@task(retries=0)  # a setting to change will not change by itself
def preflight(cfg: dict, version: str) -> None:
    run_preflight(cfg, version)


@task(multiple_outputs=True)  # a retry adds only the steps the cluster lacks
def add_steps(cfg: dict, cluster_id: str, steps: list, planned: list) -> dict:
    return add_missing_steps(cfg, cluster_id, steps, planned)


def watch(job: JobDef, cluster_id, step_id, plan) -> StepSensor:
    return StepSensor(
        task_id=f"watch_{job.name}",
        job_name=job.name,
        progress_uris=plan["progress"],  # its log shows the job's progress on each poke
        lease_uri=plan["lease"] if job == JOBS[0] else None,  # killed, it revokes the lease its job publishes under
        job_flow_id=cluster_id,
        step_id=step_id,
        poke_interval=builders.POKE_INTERVAL_S,
        timeout=job.timeout_s,
        max_attempts=job.timeout_s // builders.POKE_INTERVAL_S,  # the deferrable trigger's timeout
        mode="reschedule",  # between pokes the worker slot is free
        deferrable=emr_deferrable(),  # read when the DAG is parsed: the environment only
        retries=0,  # a FAILED step stays failed; throttling is retried inside botocore
    )


def emr_tasks(cfg, version, plan) -> BackendTasks:
    with TaskGroup("emr", tooltip="does nothing (skipped) when backend=local"):
        checked = preflight(cfg, version)
        create_cluster = CreateClusterOnce(  # a retry reuses the cluster an earlier try created
            task_id="create_cluster",
            job_flow_overrides=plan["job_flow"],
            emr_conn_id=None,  # the whole request is built in builders.py
        )
        step_ids = add_steps(cfg, create_cluster.output, plan["steps"], plan["jobs"])
        watchers = [watch(job, create_cluster.output, step_ids[job.name], plan) for job in JOBS]
        # Setups: the cluster and its steps. Clearing any task in between clears them too, so it
        # reruns on a fresh cluster with fresh steps, and the teardown ends that cluster again.
        terminate_cluster = TerminateAndFence(
            task_id="terminate_cluster",
            job_flow_id=create_cluster.output,
            lease_uri=plan["lease"],
            watcher_task_id=watchers[0].task_id,
        ).as_teardown(setups=[create_cluster, step_ids.operator])
        chain(checked, create_cluster, step_ids, *watchers, terminate_cluster)
    # publish_summary comes after the teardown too: the run report's cost counts the cluster's whole life.
    return BackendTasks(
        entry=checked.operator, result_task_id=create_cluster.task_id, done=[watchers[-1], terminate_cluster]
    )
