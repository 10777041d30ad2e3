"""One typed, frozen config per run, built from the run's params and the deployment's settings.

Deployment settings (never credentials; AWS access is the Airflow connection `aws_default`, whose
extra sets region_name) are read from the Airflow Variable `fruits_<name>`, else the environment
variable `FRUITS_<NAME>`, else the default below:

    bucket                 fruits-local         required for backend=emr
    landing_dir            <repo>/data/landing  default of the landing_dir param
    weights                (see params.py)      default of the weights param
    emr_service_role       fruits-emr-service-role
    emr_instance_profile   fruits-emr-ec2-role  instance profile and its role share this name
    release_label          emr-7.12.0
    primary_instance_type  m5.xlarge
    subnet_id              (none)               a private subnet with an S3 gateway endpoint
    security_configuration (none)
    idle_timeout_s         3600                 AutoTerminationPolicy: the safety net if Airflow is gone
Four are environment-only, because they describe this machine and only matter for backend=local:
FRUITS_LOCAL_LAKE (the folder that stands for the bucket, default <repo>/data/lake),
FRUITS_LOCAL_STORAGE (`lake`, the default: that folder; `s3`: the bucket of `aws_default`, e.g.
MinIO in docker-compose, with Spark reaching it through S3A), FRUITS_SPARK_MASTER (default
local[*]; docker-compose points it at its standalone master) and FRUITS_SPARK_JOBS_DIR (default
<repo>/spark_jobs).
"""
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from fruits import layout
from fruits.lake import REPO, default_lake, to_local
from fruits.params import InvalidParam, check_weights, validate

DEFAULTS = {
    "bucket": "fruits-local",
    "landing_dir": str(REPO / "data" / "landing"),
    "weights": None,
    "emr_service_role": "fruits-emr-service-role",
    "emr_instance_profile": "fruits-emr-ec2-role",
    # EMR 7.12 (Spark 3.5, Amazon Linux 2023): same Spark line as requirements.txt; pinned so a
    # new release never changes a run silently.
    "release_label": "emr-7.12.0",
    "primary_instance_type": "m5.xlarge",
    "subnet_id": None,
    "security_configuration": None,
    "idle_timeout_s": "3600",
}


@dataclass(frozen=True)
class PipelineConfig:
    batch_id: str
    landing_dir: str
    backend: str
    pca_k: Optional[int]
    pca_variance: float
    weights: str
    instance_type: str
    core_count: int
    task_spot_count: int
    bucket: str
    local_lake: str
    spark_jobs_dir: str
    emr_service_role: str = DEFAULTS["emr_service_role"]
    emr_instance_profile: str = DEFAULTS["emr_instance_profile"]
    release_label: str = DEFAULTS["release_label"]
    primary_instance_type: str = DEFAULTS["primary_instance_type"]
    subnet_id: Optional[str] = None
    security_configuration: Optional[str] = None
    idle_timeout_s: int = 3600
    aws_conn_id: str = "aws_default"
    local_storage: str = "lake"
    spark_master: str = "local[*]"

    def uri(self, key: str = "") -> str:
        return layout.s3_uri(self.bucket, key)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PipelineConfig":
        return cls(**data)


def read_settings() -> dict:
    """Deployment settings: Variable fruits_<name>, else env FRUITS_<NAME>, else default. Task-time only."""
    from airflow.sdk import Variable

    settings = {}
    for name, default in DEFAULTS.items():
        value = Variable.get(f"fruits_{name}", default=None)
        settings[name] = value if value not in (None, "") else os.environ.get(f"FRUITS_{name.upper()}", default)
    settings["local_lake"] = str(default_lake())
    settings["spark_jobs_dir"] = os.environ.get("FRUITS_SPARK_JOBS_DIR") or str(REPO / "spark_jobs")
    settings["local_storage"] = os.environ.get("FRUITS_LOCAL_STORAGE") or "lake"
    settings["spark_master"] = os.environ.get("FRUITS_SPARK_MASTER") or "local[*]"
    return settings


def resolve(conf: Mapping[str, Any], settings: Mapping[str, Any], run_date: str) -> PipelineConfig:
    """Pure: params + settings + the run's date -> PipelineConfig, or InvalidParam naming the param."""
    p = validate(conf)
    backend = p["backend"]
    bucket = settings["bucket"]
    if backend == "emr" and bucket == DEFAULTS["bucket"]:
        raise InvalidParam("backend", "emr needs a bucket: set Variable fruits_bucket or env FRUITS_BUCKET")
    landing = Path(p.get("landing_dir") or settings["landing_dir"]).expanduser().resolve()
    if not landing.is_dir():
        raise InvalidParam("landing_dir", f"not a folder: {landing}")
    lake = Path(settings["local_lake"])
    local_storage = settings.get("local_storage", "lake")
    if local_storage not in ("lake", "s3"):
        raise InvalidParam("backend", f"FRUITS_LOCAL_STORAGE must be 'lake' or 's3', not {local_storage!r}")
    weights = p.get("weights") or settings.get("weights") or (
        layout.s3_uri(bucket, layout.MODELS + layout.DEFAULT_WEIGHTS_FILE) if backend == "emr" else "imagenet")
    if backend == "local" and not weights.startswith(("s3://", "imagenet", "random")):
        weights = str(Path(weights).expanduser().resolve())  # the job's cwd is not ours
    check_weights(weights, backend, to_local(weights, lake))
    return PipelineConfig(
        batch_id=p.get("batch_id") or run_date,
        landing_dir=str(landing),
        backend=backend,
        pca_k=p["pca_k"],
        pca_variance=p["pca_variance"],
        weights=weights,
        instance_type=p["instance_type"],
        core_count=p["core_count"],
        task_spot_count=p["task_spot_count"],
        bucket=bucket,
        local_lake=str(lake),
        spark_jobs_dir=settings["spark_jobs_dir"],
        emr_service_role=settings["emr_service_role"],
        emr_instance_profile=settings["emr_instance_profile"],
        release_label=settings["release_label"],
        primary_instance_type=settings["primary_instance_type"],
        subnet_id=settings.get("subnet_id") or None,
        security_configuration=settings.get("security_configuration") or None,
        idle_timeout_s=int(settings["idle_timeout_s"]),
        local_storage=local_storage,
        spark_master=settings.get("spark_master", "local[*]"),
    )


def emr_deferrable() -> bool:
    """Read when the DAG is parsed: deferrable sensors need a running triggerer (FRUITS_EMR_DEFERRABLE=true)."""
    return os.environ.get("FRUITS_EMR_DEFERRABLE", "false").strip().lower() in ("1", "true", "yes")
