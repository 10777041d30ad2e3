"""A run's extractor, predicted before anything runs (fruits_jobs/extractors.py says how weights
are named): so validate_params refuses a run whose features the current space could never take."""

import tempfile
from pathlib import Path

from fruits.lake.storage import Storage
from fruits_jobs import contract, extractors
from fruits_jobs.digests import file_digests


def weights_sha256(weights: str, local_file: str | None, storage: Storage, root: str) -> str | None:
    """The sha256 of a weights file's bytes: a file on this machine (local_file: one the run will
    stage), or an object of the lake's bucket (read once, ~9 MB); None for imagenet, random, and an
    object in another bucket (then the PCA job is the one to check)."""
    if weights in contract.NAMED_WEIGHTS:
        return None
    if local_file or not weights.startswith("s3://"):
        return file_digests(local_file or weights, "sha256")[0]
    if not weights.startswith(root):
        return None
    with tempfile.TemporaryDirectory(prefix="fruits-weights-") as scratch:
        return file_digests(str(storage.local_file(weights[len(root) :], Path(scratch))), "sha256")[0]


def planned(weights: str, sha256: str | None, precision: str) -> dict | None:
    """The part of the run's extractor its params choose (the jobs' lock chooses the export); None
    when the weights cannot be named here."""
    if sha256 is None and weights not in contract.NAMED_WEIGHTS:
        return None
    size = extractors.DEFAULT_IMAGE_SIZE
    name = extractors.weights_name(weights, size, sha256)
    return extractors.extractor(name, size, extractors.DEFAULT_ENGINE, precision)
