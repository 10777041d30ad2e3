"""backend=local: the jobs run by a local spark-submit, one after the other, in the run_locally task;
the bucket is a folder (the lake) or, in docker-compose, MinIO's bucket through S3A."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fruits.backends import run_report
from fruits.backends.base import Backend, BackendTasks
from fruits.config.params import InvalidParam
from fruits.config.run import LocalConfig, RunConfig
from fruits.config.settings import DEFAULTS, shared_weights
from fruits.lake.folder import to_local
from fruits_jobs import layout

STORAGES = ("lake", "s3")


class LocalBackend(Backend):
    name = "local"

    def bucket_and_root(self, settings: Mapping[str, Any]) -> tuple[str, str]:
        storage = settings["local_storage"]
        if storage not in STORAGES:
            raise InvalidParam("backend", f"FRUITS_LOCAL_STORAGE must be 'lake' or 's3', not {storage!r}")
        if storage == "s3":  # docker-compose: MinIO's bucket, reached like S3
            return settings["bucket"], layout.s3_uri(settings["bucket"])
        return str(DEFAULTS["bucket"]), f"{Path(settings['local_lake']).expanduser().resolve()}/"

    def default_weights(self, bucket: str) -> str:
        return shared_weights() or "imagenet"  # as `make run`: the genuine weights beside the checkout

    def weights_for_jobs(self, weights: str, root: str) -> str:
        # With the lake folder as the bucket, s3://<bucket>/models/… is <lake>/models/….
        return weights if root.startswith("s3://") else to_local(weights, Path(root))

    def section(
        self, params: Mapping[str, Any], settings: Mapping[str, Any], bucket: str, weights: str
    ) -> tuple[LocalConfig, str]:
        lake = str(Path(settings["local_lake"]).expanduser().resolve())
        return LocalConfig(lake=lake, storage=settings["local_storage"], spark_master=settings["spark_master"]), weights

    def add_tasks(self, cfg, version, plan) -> BackendTasks:
        from fruits.backends.local.tasks import local_tasks  # the operators: DAG parse time only

        return local_tasks(cfg, plan)

    def run_report(self, cfg: RunConfig, result: Any, images: dict[str, int]) -> dict:
        return run_report.local_report(result, images)
