"""The pipeline's Spark jobs as data: one backend-neutral spec per job, built once per run.

A `SparkJob` says what to run (the staged entrypoint, its --py-files, its arguments, the Spark
settings it needs wherever it runs) and how long it may take. Each backend renders the same
list: `emr.spark_steps` into EMR steps, `local_runner.command` into a local spark-submit.

    a new step:    one more `JobDef` in JOBS (the DAG adds its sensor from that tuple)
    a new engine:  one more renderer of SparkJob, beside emr.py and local_runner.py
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fruits_jobs import contract, layout

if TYPE_CHECKING:  # the renderers and the benchmark import this module without Airflow
    from fruits.config.run import RunConfig


@dataclass(frozen=True)
class SparkJob:
    name: str
    entrypoint: str  # URI of the staged entrypoint file
    py_files: tuple[str, ...]  # URIs shipped with --py-files (none: run from a source tree)
    args: tuple[str, ...]  # the job's own command line (its argparse contract)
    conf: dict[str, str]  # Spark settings the job needs on every backend
    timeout_s: int  # longest a healthy run takes, with margin

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SparkJob:
        return cls(**{**data, "py_files": tuple(data["py_files"]), "args": tuple(data["args"])})


# What ends a failed job's output: its own `error: ...` (fruits_jobs.common.run_main), and a
# traceback's last line, `pyspark.errors...AnalysisException: ...` or `UsageError: ...`.
_CAUSE = re.compile(r"^(error: |[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt): )")


def is_cause(line: str) -> bool:
    """A line that says why a job failed: logged at ERROR, and repeated by the task's failure."""
    return bool(_CAUSE.match(line))


def submit_args(job: SparkJob) -> list[str]:
    """spark-submit's arguments after the backend's own (master, deploy mode, cluster shape)."""
    py_files = ["--py-files", ",".join(job.py_files)] if job.py_files else []
    conf = [item for key, value in sorted(job.conf.items()) for item in ("--conf", f"{key}={value}")]
    return [*py_files, *conf, job.entrypoint, *job.args]


def features_args(cfg: RunConfig) -> list[str]:
    return features_job_args(cfg, with_batch=True)


def refeaturize_args(cfg: RunConfig) -> list[str]:
    """The features job's arguments without a batch of the day: a change_extractor run that brought
    no photos (every published batch featurized again, then one switch)."""
    return features_job_args(cfg, with_batch=False)


def features_job_args(cfg: RunConfig, with_batch: bool) -> list[str]:
    def batch(*args: str) -> list[str]:
        return list(args) if with_batch else []

    return [
        *batch("--images", cfg.uri(layout.raw_prefix(cfg.batch_id))),
        "--features",
        cfg.uri(layout.FEATURES),
        "--rejects",
        cfg.uri(layout.REJECTS),
        *batch("--batch-id", cfg.batch_id),
        "--weights",
        cfg.weights,
        "--precision",
        cfg.precision,
        *(["--calibration", cfg.uri(layout.CALIBRATION)] if cfg.precision == "int8" else []),
        "--model-cache",
        cfg.uri(layout.MODELS),
        *batch("--manifest", cfg.uri(layout.manifest_key(cfg.batch_id))),
        *batch("--lease", cfg.uri(layout.lease_key(cfg.batch_id))),
        *(["--refeaturize-published", cfg.uri()] if cfg.change_extractor else []),
        *retention_args(cfg),
    ]


def retention_args(cfg: RunConfig) -> list[str]:
    """Both jobs vacuum the tables they publish to, with the deployment's retention."""
    return ["--retention-hours", f"{cfg.retention_hours:g}"]


def pca_args(cfg: RunConfig) -> list[str]:
    # The lake's one embedding space under pca/: the job adds the batches it lacks (this run's), and
    # fits a new space only on drift, a new k rule or pca_refit=always (fruits_jobs/pca.py).
    size = ["--k", str(cfg.pca_k)] if cfg.pca_k is not None else ["--variance", str(cfg.pca_variance)]
    lake = ["--features", cfg.uri(layout.FEATURES), "--output", cfg.uri(layout.PCA)]
    change = ["--change-extractor"] if cfg.change_extractor else []
    return [*lake, *size, "--refit", cfg.pca_refit, *change, *retention_args(cfg)]


@dataclass(frozen=True)
class JobDef:
    """What is known of a job when the DAG is parsed; its arguments come from the run's config."""

    name: str
    entrypoint: str  # file name in the code bundle
    timeout_s: int
    args: Callable[[RunConfig], list[str]]


# In order: each job reads what the one before it wrote.
FEATURES_JOB, PCA_JOB = "extract_features", "reduce_dimensions"
JOBS = (
    JobDef(
        FEATURES_JOB, contract.FEATURES_ENTRYPOINT, contract.JOB_TIMEOUT_S[contract.FEATURES_ENTRYPOINT], features_args
    ),
    JobDef(PCA_JOB, contract.PCA_ENTRYPOINT, contract.JOB_TIMEOUT_S[contract.PCA_ENTRYPOINT], pca_args),
)


def plan_jobs(cfg: RunConfig, code_version: str, with_photos: bool = True) -> list[SparkJob]:
    """The run's jobs, running the code staged under code/<code_version>/ of the run's bucket; without
    photos (a run that only brings the space up to date), the PCA alone, or for change_extractor the
    features job on the published batches alone, then the PCA."""
    code = cfg.uri(layout.code_prefix(code_version))
    return [
        SparkJob(
            name=d.name,
            entrypoint=code + d.entrypoint,
            py_files=(code + contract.PY_FILES_ZIP,),
            args=tuple(refeaturize_args(cfg) if d.name == FEATURES_JOB and not with_photos else d.args(cfg)),
            conf={},
            timeout_s=d.timeout_s,
        )
        for d in JOBS
        if with_photos or d.name != FEATURES_JOB or cfg.change_extractor
    ]
