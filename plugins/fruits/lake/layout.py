"""Where everything lives in the bucket (and, for backend=local, in the lake folder standing for it).

    raw/batch_id=<id>/<[Training|Test/]Class>/<file>   photos as landed; one prefix per batch so a job
                                                       reads exactly one batch and the label stays the
                                                       parent folder; Hive-style name like the outputs
    manifests/batch_id=<id>.json                       what a batch holds (keys, sizes, sha256, skips);
                                                       written last, so it also marks "ingest finished"
    code/<version>/...                                 the jobs' bundle; version = content hash, so a run
                                                       always executes the code it staged, never a newer one
    models/<file>.weights.h5                           ImageNet weights for clusters without internet
    models/mobilenet_v2_<sha256>_<size>px_<exporter>.onnx  their ONNX export, made once by the features job
    features/batch_id=<id>/run=<run>/                  Spark outputs, one folder per batch and run;
    rejects/batch_id=<id>/run=<run>/                   features/batch_id=<id>/_commits/<run>.json, written
                                                       last, makes a run's features + rejects + summary the
                                                       batch's current version at once (commits.py)
    pca/batch_id=<id>/run=<run>/                       PCA fitted on all current features, per batch run:
                                                       metrics.json, reduced/, model/, plots; committed in
                                                       pca/batch_id=<id>/_commits/<run>.json
    logs/emr/                                          EMR LogUri (step stdout/stderr, bootstrap logs)

The names are defined in fruits_jobs/contract.py (the jobs write there too); this module builds
keys from them. Prefixes, not buckets, separate the kinds of data so one least-privilege policy can
grant each its own verbs (AirflowPolicy in infra/aws/fruits.yaml).
"""
from fruits_jobs.contract import (CODE, COMMITS_DIR, DEFAULT_WEIGHTS_FILE, EMR_LOGS,  # noqa: F401 (layout names)
                                  FEATURES, MANIFESTS, MODELS, PCA, PCA_METRICS_FILE, PCA_MODEL_DIR,
                                  PCA_PLOTS, PCA_REDUCED_DIR, RAW, REJECTS, WHEELS, partition, progress_name)


def batch_prefix(dataset: str, batch_id: str) -> str:
    """A batch's Hive-style partition under one of the prefixes above (raw/, features/, ...)."""
    return f"{dataset}{partition(batch_id)}/"


def raw_prefix(batch_id: str) -> str:
    return batch_prefix(RAW, batch_id)


def manifest_key(batch_id: str) -> str:
    return f"{MANIFESTS}{partition(batch_id)}.json"


def batch_of_manifest(key: str) -> str:
    return key[len(MANIFESTS) + len(partition("")):-len(".json")]


def code_prefix(version: str) -> str:
    return f"{CODE}{version}/"


def pca_prefix(batch_id: str) -> str:
    return batch_prefix(PCA, batch_id)


def commits_prefix(dataset: str, batch_id: str) -> str:
    """A batch's commits (features/ or pca/): the newest names the batch's current outputs."""
    return f"{batch_prefix(dataset, batch_id)}{COMMITS_DIR}/"


def progress_key(batch_id: str) -> str:
    """Where the features job keeps its progress while it runs (the EMR sensor logs it)."""
    return FEATURES + progress_name(batch_id)


def staged_weights_key(sha256: str, suffix: str) -> str:
    """A weights file staged by content: a new file, a new key; the same file, staged once."""
    return f"{MODELS}{sha256}{suffix}"


def wheels_prefix(lock_sha256: str) -> str:
    """The jobs' wheels for one lock file (make wheelhouse): staged once per closure, not per code."""
    return f"{WHEELS}{lock_sha256}/"


def s3_uri(bucket: str, key: str = "") -> str:
    return f"s3://{bucket}/{key}"
