"""backend=emr_serverless: the jobs as job runs of an EMR Serverless application (no cluster to boot;
workers start on demand, billed per second, and the application stops itself when idle). Its config
section, what it stages, its rendering of the jobs (one StartJobRun each) and its run report; the
tasks that start and watch the job runs are in tasks.py."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fruits.backends import on_s3
from fruits.backends.base import BackendTasks
from fruits.backends.emr_serverless import builders, image, report
from fruits.backends.jobs import JOBS, SparkJob
from fruits.config.params import InvalidParam
from fruits.config.run import RunConfig, ServerlessConfig, serverless_of
from fruits.lake.storage import Storage

log = logging.getLogger(__name__)


class EmrServerlessBackend(on_s3.S3Backend):
    name = "emr_serverless"

    def section(
        self, params: Mapping[str, Any], settings: Mapping[str, Any], bucket: str, weights: str
    ) -> tuple[ServerlessConfig, str]:
        values = {}
        for name in ("serverless_application_id", "serverless_job_role_arn"):
            if not settings[name]:
                raise InvalidParam(
                    "backend",
                    f"emr_serverless needs the setting {name}: set Variable fruits_{name} (or env "
                    f"FRUITS_{name.upper()}) to the stack output fruits_{name} (docs/aws.md)",
                )
            values[name] = settings[name]
        try:
            tag = image.image_tag()
        except OSError as exc:
            raise InvalidParam(
                "backend", f"emr_serverless checks the workers' image against {image.DOCKERFILE}: {exc}"
            ) from exc
        weights_file, weights = on_s3.weights_in_bucket(bucket, weights)
        return ServerlessConfig(
            application_id=values["serverless_application_id"],
            job_role_arn=values["serverless_job_role_arn"],
            image_tag=tag,
            weights_file=weights_file,
        ), weights

    def stage(self, cfg: RunConfig, storage: Storage) -> None:
        """A local weights file (once per content); the jobs' Python is in the image."""
        section = serverless_of(cfg)
        if on_s3.stage_weights(storage, section.weights_file, cfg.weights, cfg.uri()):
            log.info("weights %s staged at %s", section.weights_file, cfg.weights)

    def weights_to_stage(self, cfg: RunConfig) -> str | None:
        return serverless_of(cfg).weights_file

    def render(self, cfg: RunConfig, jobs: list[SparkJob], version: str, run_id: str) -> dict:
        section = serverless_of(cfg)
        planned = {job.name: builders.job_run(job, cfg.bucket, cfg.batch_id, run_id) for job in jobs}
        return {
            "application_id": section.application_id,
            "job_role_arn": section.job_role_arn,
            "bucket": cfg.bucket,
            **{f"job_run_{job.name}": planned.get(job.name) for job in JOBS},  # None: not part of this run
            **on_s3.watch_uris(cfg),
        }

    def add_tasks(self, cfg, version, plan) -> BackendTasks:
        from fruits.backends.emr_serverless.tasks import serverless_tasks  # the operators: DAG parse time only

        return serverless_tasks(cfg, version, plan)

    def run_report(self, cfg: RunConfig, result: Any, images: dict[str, int]) -> dict:
        from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook

        hook = EmrServerlessHook(aws_conn_id=cfg.aws_conn_id)
        app_id = result["application_id"]
        runs = {
            job: hook.conn.get_job_run(applicationId=app_id, jobRunId=run_id)["jobRun"] if run_id else None
            for job, run_id in result["job_runs"].items()
        }
        application = hook.conn.get_application(applicationId=app_id)["application"]
        return report.serverless_report(application, runs, images, report.load_prices(), hook.conn_region_name)

    def report_lines(self, run: dict) -> list[str]:
        return report.serverless_lines(run)
