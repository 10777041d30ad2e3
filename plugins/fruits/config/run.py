"""One typed, frozen config per run, built from the run's params and the deployment's settings
(fruits/settings.py: the one table of settings, their defaults and meanings)."""
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Optional

from fruits.lake import layout
from fruits.lake.folder import to_local
from fruits.config.params import InvalidParam, check_weights, check_x86_64, validate
from fruits.config.settings import AWS_CONN_ID, DEFAULTS, ENV_ONLY, setting_from_env, shared_weights
from fruits_jobs.digests import file_digests
from fruits_jobs import contract
from fruits_jobs.bundle import LOCK, spark_jobs_dir


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
    bucket: str = DEFAULTS["bucket"]
    local_lake: str = DEFAULTS["local_lake"]
    emr_service_role: str = DEFAULTS["emr_service_role"]
    emr_instance_profile: str = DEFAULTS["emr_instance_profile"]
    release_label: str = DEFAULTS["release_label"]
    primary_instance_type: str = DEFAULTS["primary_instance_type"]
    subnet_id: Optional[str] = DEFAULTS["subnet_id"]
    security_configuration: Optional[str] = DEFAULTS["security_configuration"]
    security_group_ids: Optional[str] = DEFAULTS["security_group_ids"]
    project_tag: str = DEFAULTS["project_tag"]
    idle_timeout_s: int = int(DEFAULTS["idle_timeout_s"])
    aws_conn_id: str = AWS_CONN_ID
    local_storage: str = DEFAULTS["local_storage"]
    spark_master: str = DEFAULTS["spark_master"]
    weights_file: Optional[str] = None  # a file on this machine that stage_code uploads to `weights`
    wheelhouse: Optional[str] = None  # a folder of wheels on this machine that stage_code uploads (emr)

    @property
    def uses_lake_folder(self) -> bool:
        return self.backend == "local" and self.local_storage == "lake"

    def uri(self, key: str = "") -> str:
        """Where `key` of the bucket is for this run's jobs: s3://, or the lake folder standing for it."""
        if self.uses_lake_folder:
            return f"{Path(self.local_lake)}/{key}"
        return layout.s3_uri(self.bucket, key)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PipelineConfig":
        return cls(**data)


class LazySettings(Mapping):
    """The settings, each read when first used: a run reads only those it needs. (Airflow 3.1's task
    SDK logs every lookup of an unset Variable at ERROR level, default or not: apache/airflow#52771,
    fixed in 3.2 by #61625; a local run then reads none.)"""

    def __init__(self, read_one):
        self._read_one, self._values = read_one, {}

    def __getitem__(self, name: str):
        if name not in DEFAULTS:
            raise KeyError(name)
        if name not in self._values:
            self._values[name] = self._read_one(name)
        return self._values[name]

    def __iter__(self):
        return iter(DEFAULTS)

    def __len__(self) -> int:
        return len(DEFAULTS)


def read_setting(name: str):
    """Variable fruits_<name> (not for env-only settings), else env FRUITS_<NAME>, else the default."""
    from airflow.sdk import Variable

    value = None if name in ENV_ONLY else Variable.get(f"fruits_{name}", default=None)
    return value if value not in (None, "") else setting_from_env(name)


def read_settings() -> LazySettings:
    """Task-time only (Variables are not read when the DAG is parsed)."""
    return LazySettings(read_setting)


def emr_settings(settings: Mapping[str, Any]) -> dict:
    """The PipelineConfig fields only an EMR run reads (and so only an EMR run looks up)."""
    check_x86_64("fruits_primary_instance_type", settings["primary_instance_type"])
    return {
        "emr_service_role": settings["emr_service_role"],
        "emr_instance_profile": settings["emr_instance_profile"],
        "release_label": settings["release_label"],
        "primary_instance_type": settings["primary_instance_type"],
        "subnet_id": settings.get("subnet_id") or None,
        "security_configuration": settings.get("security_configuration") or None,
        "security_group_ids": settings.get("security_group_ids") or None,
        "project_tag": settings.get("project_tag") or DEFAULTS["project_tag"],
        "idle_timeout_s": int(settings["idle_timeout_s"]),
        "wheelhouse": wheelhouse_folder(settings.get("wheelhouse")),
    }


def wheelhouse_folder(value: Optional[str]) -> Optional[str]:
    if not value:
        return None
    folder = Path(value).expanduser().resolve()
    lock = (spark_jobs_dir() / LOCK).read_text()
    missing = missing_wheels(lock, [w.name for w in folder.glob("*.whl")] if folder.is_dir() else [])
    if missing:
        raise InvalidParam("backend", f"the wheelhouse setting (fruits_wheelhouse) is {folder}, which lacks "
                                      f"{len(missing)} wheel(s) of spark_jobs/{LOCK} (e.g. {missing[0]}): run "
                                      "`make wheelhouse WHEELHOUSE=<that folder>`, or unset it to install from PyPI")
    return str(folder)


def missing_wheels(lock_text: str, wheel_names: list) -> list:
    """The lock's name==version pins that no wheel file provides (wheel names: PEP 427)."""
    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "_", name).lower()

    have = {(norm(n.split("-")[0]), n.split("-")[1]) for n in wheel_names if n.count("-") >= 4}
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock_text, re.M)
    return [f"{name}=={version}" for name, version in pins if (norm(name), version) not in have]


def resolve(conf: Mapping[str, Any], settings: Mapping[str, Any], run_date: str) -> PipelineConfig:
    """Pure: params + settings + the run's date -> PipelineConfig, or InvalidParam naming the param.
    Reads only the settings this run needs (settings may be lazy: see LazySettings)."""
    p = validate(conf)
    backend = p["backend"]
    local_storage = settings["local_storage"]
    if local_storage not in ("lake", "s3"):
        raise InvalidParam("backend", f"FRUITS_LOCAL_STORAGE must be 'lake' or 's3', not {local_storage!r}")
    uses_bucket = backend == "emr" or local_storage == "s3"
    bucket = settings["bucket"] if uses_bucket else DEFAULTS["bucket"]
    if backend == "emr" and bucket == DEFAULTS["bucket"]:
        raise InvalidParam("backend", "emr needs a bucket: set Variable fruits_bucket or env FRUITS_BUCKET")
    landing = Path(p.get("landing_dir") or settings["landing_dir"]).expanduser().resolve()
    if not landing.is_dir():
        raise InvalidParam("landing_dir", f"not a folder: {landing}")
    lake = Path(settings["local_lake"]).expanduser().resolve()
    weights = p.get("weights") or settings["weights"] or (
        layout.s3_uri(bucket, layout.MODELS + layout.DEFAULT_WEIGHTS_FILE) if backend == "emr"
        else shared_weights() or "imagenet")
    if backend == "local" and local_storage == "lake":
        weights = to_local(weights, lake)  # s3://<bucket>/models/… is <lake>/models/… here
    if not weights.startswith(("s3://", "imagenet", "random")):
        weights = str(Path(weights).expanduser().resolve())  # the job's cwd is not ours
    check_weights(weights, backend)
    weights_file = None
    if backend == "emr" and not weights.startswith(("s3://", "imagenet", "random")):
        # A cluster cannot read this machine's disk: stage_code uploads the file, by content, and
        # the job reads it there (no cluster boots to find the weights missing).
        weights_file, weights = weights, layout.s3_uri(bucket, layout.staged_weights_key(
            file_digests(weights, "sha256")[0], contract.weights_suffix(weights)))
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
        local_storage=local_storage,
        spark_master=settings["spark_master"],
        weights_file=weights_file,
        **(emr_settings(settings) if backend == "emr" else {}),
    )



def emr_deferrable() -> bool:
    """Read when the DAG is parsed: deferrable sensors need a running triggerer."""
    return setting_from_env("emr_deferrable").strip().lower() in ("1", "true", "yes")
