"""What the backends whose jobs run in AWS share (emr, emr_serverless): the bucket must be a real
one, the default weights are in it, and a weights file of this machine is staged into it by content."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fruits.backends.base import Backend
from fruits.backends.jobs import JOBS
from fruits.config.params import InvalidParam
from fruits.config.run import RunConfig
from fruits.config.settings import DEFAULTS
from fruits.lake.storage import Storage
from fruits_jobs import contract, layout
from fruits_jobs.digests import file_digests


def bucket_and_root(backend: str, settings: Mapping[str, Any]) -> tuple[str, str]:
    bucket = settings["bucket"]
    if bucket == DEFAULTS["bucket"]:
        raise InvalidParam("backend", f"{backend} needs a bucket: set Variable fruits_bucket or env FRUITS_BUCKET")
    return bucket, layout.s3_uri(bucket)


def default_weights(bucket: str) -> str:
    return layout.s3_uri(bucket, layout.MODELS + layout.DEFAULT_WEIGHTS_FILE)  # the workers need no internet


def weights_in_bucket(bucket: str, weights: str) -> tuple[str | None, str]:
    """(the file of this machine to stage, or None; the weights as the jobs read them). AWS workers
    cannot read this machine's disk: a local file is staged by content, and the jobs read it there
    (nothing starts to find the weights missing)."""
    if weights.startswith(("s3://", *contract.NAMED_WEIGHTS)):
        return None, weights
    digest = file_digests(weights, "sha256")[0]
    return weights, layout.s3_uri(bucket, layout.staged_weights_key(digest, contract.weights_suffix(weights)))


def stage_weights(storage: Storage, weights_file: str | None, weights: str, root: str) -> bool:
    """Upload weights_file to the key the jobs read (weights), once per content; False: nothing to stage."""
    if not weights_file:
        return False
    key = weights[len(root) :]
    if key not in storage.sizes(key):
        storage.upload_file(Path(weights_file), key)
    return True


def watch_uris(cfg: RunConfig) -> dict:
    """What the sensors read in the bucket (plan_jobs' XCom): the progress the first job writes, and the
    lease its commit publishes the batch under (lake/leases.py), which a run that gives up revokes."""
    return {
        "progress": {JOBS[0].name: cfg.uri(layout.progress_key(cfg.batch_id))},
        "lease": cfg.uri(layout.lease_key(cfg.batch_id)),
    }


class S3Backend(Backend):
    """A backend whose jobs run in AWS: the bucket and the default weights are the rules above."""

    def bucket_and_root(self, settings: Mapping[str, Any]) -> tuple[str, str]:
        return bucket_and_root(self.name, settings)

    def default_weights(self, bucket: str) -> str:
        return default_weights(bucket)
