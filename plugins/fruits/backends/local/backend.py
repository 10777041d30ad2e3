"""backend=local: the jobs run by a local spark-submit, one after the other, in the run_locally task;
the bucket is a folder (the lake) or, in docker-compose, MinIO's bucket through S3A."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import task

from fruits.backends import run_report
from fruits.backends.base import Backend, BackendTasks
from fruits.backends.jobs import SparkJob
from fruits.backends.local import runner
from fruits.config.params import InvalidParam
from fruits.config.run import LocalConfig, RunConfig, from_xcom
from fruits.config.settings import DEFAULTS, shared_weights
from fruits.lake import layout
from fruits.lake.folder import to_local

STORAGES = ("lake", "s3")


class LocalBackend(Backend):
    name = "local"

    def bucket_and_root(self, settings: Mapping[str, Any]) -> tuple[str, str]:
        storage = settings["local_storage"]
        if storage not in STORAGES:
            raise InvalidParam("backend", f"FRUITS_LOCAL_STORAGE must be 'lake' or 's3', not {storage!r}")
        if storage == "s3":  # docker-compose: MinIO's bucket, reached like S3
            return settings["bucket"], layout.s3_uri(settings["bucket"])
        return DEFAULTS["bucket"], f"{Path(settings['local_lake']).expanduser().resolve()}/"

    def default_weights(self, bucket: str) -> str:
        return shared_weights() or "imagenet"  # as `make run`: the genuine weights beside the checkout

    def weights_for_jobs(self, weights: str, root: str) -> str:
        # With the lake folder as the bucket, s3://<bucket>/models/… is <lake>/models/….
        return weights if root.startswith("s3://") else to_local(weights, Path(root))

    def section(self, params: Mapping[str, Any], settings: Mapping[str, Any], bucket: str,
                weights: str) -> tuple[LocalConfig, str]:
        lake = str(Path(settings["local_lake"]).expanduser().resolve())
        return LocalConfig(lake=lake, storage=settings["local_storage"], spark_master=settings["spark_master"]), weights

    def add_tasks(self, cfg, version, plan) -> BackendTasks:
        local = run_locally(cfg, plan["jobs"])
        return BackendTasks(entry=local.operator, result_task_id=local.operator.task_id, done=[local.operator])

    def run_report(self, cfg: RunConfig, result: Any, images: dict[str, int]) -> dict:
        return run_report.local_report(result, images)


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
