"""backend=emr: a transient EMR cluster per run. Its config section, what it stages besides the code,
its rendering of the jobs (the RunJobFlow request and the steps), and its run report; the tasks
that run and watch the cluster are in tasks.py."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from fruits.backends import on_s3
from fruits.backends.base import BackendTasks
from fruits.backends.emr import builders, clusters, report
from fruits.backends.jobs import JOBS, SparkJob
from fruits.config.params import InvalidParam, check_x86_64
from fruits.config.run import EmrConfig, RunConfig, emr_of
from fruits.config.settings import DEFAULTS
from fruits.lake.storage import Storage, upload_missing
from fruits_jobs import layout
from fruits_jobs.bundle import LOCK, spark_jobs_dir
from fruits_jobs.digests import file_digests

log = logging.getLogger(__name__)


class EmrBackend(on_s3.S3Backend):
    name = "emr"

    def section(
        self, params: Mapping[str, Any], settings: Mapping[str, Any], bucket: str, weights: str
    ) -> tuple[EmrConfig, str]:
        check_x86_64("fruits_primary_instance_type", settings["primary_instance_type"])
        weights_file, weights = on_s3.weights_in_bucket(bucket, weights)
        return EmrConfig(
            instance_type=params["instance_type"],
            core_count=params["core_count"],
            task_spot_count=params["task_spot_count"],
            service_role=settings["emr_service_role"],
            instance_profile=settings["emr_instance_profile"],
            release_label=settings["release_label"],
            primary_instance_type=settings["primary_instance_type"],
            subnet_id=settings.get("subnet_id") or None,
            security_configuration=settings.get("security_configuration") or None,
            security_group_ids=settings.get("security_group_ids") or None,
            project_tag=settings.get("project_tag") or str(DEFAULTS["project_tag"]),
            idle_timeout_s=int(settings["idle_timeout_s"]),
            wheelhouse=wheelhouse_folder(settings.get("wheelhouse")),
            weights_file=weights_file,
        ), weights

    def stage(self, cfg: RunConfig, storage: Storage) -> None:
        """The wheelhouse (once per lock) and a local weights file (once per content)."""
        emr = emr_of(cfg)
        if emr.wheelhouse:
            upload_missing(storage, wheels_prefix(), {w.name: w for w in Path(emr.wheelhouse).glob("*.whl")})
            log.info("wheelhouse %s staged at %s%s", emr.wheelhouse, storage.name, wheels_prefix())
        if on_s3.stage_weights(storage, emr.weights_file, cfg.weights, cfg.uri()):
            log.info("weights %s staged at %s", emr.weights_file, cfg.weights)

    def weights_to_stage(self, cfg: RunConfig) -> str | None:
        return emr_of(cfg).weights_file

    def render(self, cfg: RunConfig, jobs: list[SparkJob], version: str, run_id: str) -> dict:
        wheels = cfg.uri(wheels_prefix()) if emr_of(cfg).wheelhouse else None
        return {
            "job_flow": builders.job_flow_overrides(cfg, version, run_id, wheels),
            "steps": builders.spark_steps(jobs, cfg.batch_id),
            **on_s3.watch_uris(cfg),
        }

    def add_tasks(self, cfg, version, plan) -> BackendTasks:
        from fruits.backends.emr.tasks import emr_tasks  # the operators: DAG parse time only

        return emr_tasks(cfg, version, plan)

    def run_report(self, cfg: RunConfig, result: Any, images: dict[str, int]) -> dict:
        from airflow.providers.amazon.aws.hooks.emr import EmrHook

        hook = EmrHook(aws_conn_id=cfg.aws_conn_id)
        client, cluster_id = hook.conn, result
        groups = [
            g
            for page in client.get_paginator("list_instance_groups").paginate(ClusterId=cluster_id)
            for g in page["InstanceGroups"]
        ]
        return report.emr_report(
            client.describe_cluster(ClusterId=cluster_id)["Cluster"],
            groups,
            clusters.list_steps(client, cluster_id),
            {job.name: builders.step_name(job.name, cfg.batch_id) for job in JOBS},
            images,
            report.load_prices(),
            hook.conn_region_name,
            datetime.now(UTC),
        )

    def report_lines(self, run: dict) -> list[str]:
        return report.emr_lines(run)


def wheels_prefix() -> str:
    """Where a wheelhouse is staged: by the lock file's content, once per closure."""
    return layout.wheels_prefix(file_digests(spark_jobs_dir() / LOCK, "sha256")[0])


def wheelhouse_folder(value: str | None) -> str | None:
    if not value:
        return None
    folder = Path(value).expanduser().resolve()
    lock = (spark_jobs_dir() / LOCK).read_text()
    missing = missing_wheels(lock, [w.name for w in folder.glob("*.whl")] if folder.is_dir() else [])
    if missing:
        raise InvalidParam(
            "backend",
            f"the wheelhouse setting (fruits_wheelhouse) is {folder}, which lacks "
            f"{len(missing)} wheel(s) of spark_jobs/{LOCK} (e.g. {missing[0]}): run "
            "`make wheelhouse WHEELHOUSE=<that folder>`, or unset it to install from PyPI",
        )
    return str(folder)


def missing_wheels(lock_text: str, wheel_names: list[str]) -> list[str]:
    """The lock's name==version pins that no wheel file provides (names and versions: packaging's PEP 427
    and PEP 503 rules)."""
    have = set()
    for name in wheel_names:
        try:
            project, version, _, _ = parse_wheel_filename(name)
        except InvalidWheelFilename:
            continue
        have.add((project, version))
    pins = [
        Requirement(line.split("#")[0])
        for line in lock_text.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "-"))
    ]
    return [
        str(pin)
        for pin in pins
        if (canonicalize_name(pin.name), Version(next(iter(pin.specifier)).version)) not in have
    ]
