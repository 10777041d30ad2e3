"""One typed, frozen config per run, built from the run's params and the deployment's settings
(config/settings.py: the one table of settings, their defaults and meanings).

Nested as it is read: what every run has (`RunConfig`), and the section of the backend that runs it
(`EmrConfig`, `ServerlessConfig` or `LocalConfig`; the others are None). The backend itself decides
what is its own: where the bucket is, the default weights, and its section (fruits/backends/).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fruits.config.params import InvalidParam, check_weights, validate
from fruits.config.settings import AWS_CONN_ID, DEFAULTS, ENV_ONLY, setting_from_env
from fruits_jobs import contract, extractors
from fruits_jobs.commits import DamagedLake
from fruits_jobs.spaces import k_rule


@dataclass(frozen=True)
class EmrConfig:
    """backend=emr: the cluster's shape (params) and the account's names (settings)."""

    instance_type: str
    core_count: int
    task_spot_count: int
    service_role: str = DEFAULTS["emr_service_role"]  # type: ignore[assignment]
    instance_profile: str = DEFAULTS["emr_instance_profile"]  # type: ignore[assignment]
    release_label: str = DEFAULTS["release_label"]  # type: ignore[assignment]
    primary_instance_type: str = DEFAULTS["primary_instance_type"]  # type: ignore[assignment]
    subnet_id: str | None = None
    security_configuration: str | None = None
    security_group_ids: str | None = None
    project_tag: str = DEFAULTS["project_tag"]  # type: ignore[assignment]
    idle_timeout_s: int = int(DEFAULTS["idle_timeout_s"] or 3600)
    wheelhouse: str | None = None  # a folder of wheels on this machine that stage_code uploads
    weights_file: str | None = None  # a file on this machine that stage_code uploads to `weights`


@dataclass(frozen=True)
class ServerlessConfig:
    """backend=emr_serverless: the account's application and job role (settings), and the workers' image
    this checkout expects the application to run (emr_serverless/image.py)."""

    application_id: str
    job_role_arn: str
    image_tag: str
    weights_file: str | None = None  # a file on this machine that stage_code uploads to `weights`


@dataclass(frozen=True)
class LocalConfig:
    """backend=local: where the bucket is on this machine, and which Spark runs the jobs."""

    lake: str  # the folder standing for the bucket (storage 'lake')
    storage: str  # 'lake' (that folder) or 's3' (the bucket of aws_default, e.g. MinIO)
    spark_master: str


@dataclass(frozen=True)
class RunConfig:
    batch_id: str
    landing_dir: str
    backend: str
    pca_k: int | None
    pca_variance: float
    weights: str
    bucket: str
    root: str  # where the jobs find the bucket's keys: s3://<bucket>/, or the lake folder standing for it
    aws_conn_id: str = AWS_CONN_ID
    rerun: bool = False  # the jobs again on a published batch's stored photos (params.py)
    retention_hours: float = float(DEFAULTS["table_retention_hours"] or 168)  # the tables' vacuum
    pca_refit: str = "auto"  # auto | always | never (params.py)
    precision: str = "fp32"  # the model's: fp32 | int8 (params.py)
    change_extractor: bool = False  # re-featurize every published batch, then a new space (params.py)
    emr: EmrConfig | None = None
    emr_serverless: ServerlessConfig | None = None
    local: LocalConfig | None = None

    @property
    def pca_rule(self) -> dict:
        """How a new space's k is chosen: compared with the current space's (spaces.k_rule)."""
        return k_rule(self.pca_k, self.pca_variance)

    def uri(self, key: str = "") -> str:
        """Where `key` of the bucket is for this run's jobs."""
        return self.root + key

    @property
    def in_s3(self) -> bool:
        return self.root.startswith("s3://")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        sections = {"emr": EmrConfig, "emr_serverless": ServerlessConfig, "local": LocalConfig}
        return cls(**{k: sections[k](**v) if k in sections and v is not None else v for k, v in data.items()})


def emr_of(cfg: RunConfig) -> EmrConfig:
    """The EMR section of a run on EMR (a local run has none: asking is a bug, said as such)."""
    if cfg.emr is None:
        raise ValueError(f"run of batch {cfg.batch_id} on backend {cfg.backend!r} has no EMR section")
    return cfg.emr


def serverless_of(cfg: RunConfig) -> ServerlessConfig:
    """The EMR Serverless section of a run on EMR Serverless (another run has none: asking is a bug)."""
    if cfg.emr_serverless is None:
        raise ValueError(f"run of batch {cfg.batch_id} on backend {cfg.backend!r} has no EMR Serverless section")
    return cfg.emr_serverless


def from_xcom(body: Callable) -> Callable:
    """A task body takes the run's config as XCom carries it (a dict) and works on a RunConfig. A
    damaged lake file fails the task without a retry: retrying will not mend it (the message says what will)."""
    from airflow.exceptions import AirflowFailException

    def wrapped(cfg: Mapping[str, Any], *args, **kwargs):
        try:
            return body(RunConfig.from_dict(cfg), *args, **kwargs)
        except DamagedLake as exc:
            raise AirflowFailException(str(exc)) from exc

    wrapped.__name__, wrapped.__doc__, wrapped.__wrapped__ = body.__name__, body.__doc__, body  # type: ignore[attr-defined]
    return wrapped


class LazySettings(Mapping):
    """The settings, each read when first used: a run reads only those it needs. (Airflow 3.1's task
    SDK logs every lookup of an unset Variable at ERROR level, default or not: apache/airflow#52771,
    fixed in 3.2 by #61625; a local run then reads none.)"""

    def __init__(self, read_one: Callable[[str], Any]):
        self._read_one, self._values = read_one, {}  # type: ignore[var-annotated]

    def __getitem__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise KeyError(name)
        if name not in self._values:
            self._values[name] = self._read_one(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(DEFAULTS)

    def __len__(self) -> int:
        return len(DEFAULTS)


def read_setting(name: str) -> Any:
    """Variable fruits_<name> (not for env-only settings), else env FRUITS_<NAME>, else the default."""
    from airflow.sdk import Variable

    value = None if name in ENV_ONLY else Variable.get(f"fruits_{name}", default=None)
    return value if value not in (None, "") else setting_from_env(name)


def read_settings() -> LazySettings:
    """Task-time only (Variables are not read when the DAG is parsed)."""
    return LazySettings(read_setting)


class BackendSection(Protocol):
    """What resolve asks of the run's backend (fruits.backends.base.Backend): config stands below the
    backends, so the caller hands them in (fruits.backends.backend_named)."""

    name: str

    def bucket_and_root(self, settings: Mapping[str, Any]) -> tuple[str, str]: ...

    def default_weights(self, bucket: str) -> str: ...

    def weights_for_jobs(self, weights: str, root: str) -> str: ...

    def section(
        self, params: Mapping[str, Any], settings: Mapping[str, Any], bucket: str, weights: str
    ) -> tuple[EmrConfig | ServerlessConfig | LocalConfig, str]: ...


def resolve(
    conf: Mapping[str, Any], settings: Mapping[str, Any], run_date: str, backend_of: Callable[[str], BackendSection]
) -> RunConfig:
    """Pure: params + settings + the run's date -> RunConfig, or InvalidParam naming the param.
    Reads only the settings this run needs (settings may be lazy: see LazySettings); backend_of: the
    backend of a name (fruits.backends.backend_named)."""
    p = validate(conf)
    backend = backend_of(p["backend"])
    bucket, root = backend.bucket_and_root(settings)
    landing = Path(p.get("landing_dir") or settings["landing_dir"]).expanduser().resolve()
    if not p["rerun"]:  # a re-run reads the batch's stored photos, never the landing folder
        check_landing(landing, root)
    weights = p.get("weights") or settings["weights"] or backend.default_weights(bucket)
    weights = backend.weights_for_jobs(weights, root)
    if not weights.startswith(("s3://", *contract.NAMED_WEIGHTS)):
        weights = str(Path(weights).expanduser().resolve())  # the job's cwd is not ours
    check_weights(weights, backend.name)
    section, weights = backend.section(p, settings, bucket, weights)
    return RunConfig(
        batch_id=p.get("batch_id") or run_date,
        landing_dir=str(landing),
        backend=backend.name,
        pca_k=p["pca_k"],
        pca_variance=p["pca_variance"],
        weights=weights,
        bucket=bucket,
        root=root,
        rerun=p["rerun"],
        pca_refit=p["pca_refit"],
        precision=p["precision"] or precision(settings["precision"]),
        change_extractor=p["change_extractor"],
        retention_hours=retention_hours(settings["table_retention_hours"]),
        **{backend.name: section},  # type: ignore[arg-type]  # the section its backend names
    )


def precision(value: Any) -> str:
    """The precision setting (FRUITS_PRECISION), checked as the param is."""
    if value not in extractors.PRECISIONS:
        raise ValueError(f"setting precision={value!r}: expected one of {extractors.PRECISIONS}; set FRUITS_PRECISION")
    return value


def retention_hours(value: Any) -> float:
    """The tables' retention (setting table_retention_hours): a number of hours no shorter than the
    longest job's timeout, since a running job's files are not in a table's log until it commits and
    a shorter vacuum would delete them (tables.vacuum)."""
    try:
        hours = float(value)
    except (TypeError, ValueError):
        hours = -1.0
    if not hours >= contract.longest_job_hours():  # also refuses NaN
        raise ValueError(
            f"setting table_retention_hours={value!r}: expected a number of hours of at least "
            f"{contract.longest_job_hours():g} (the longest job's timeout); set FRUITS_TABLE_RETENTION_HOURS"
        )
    return hours


def check_landing(landing: Path, root: str) -> None:
    """The landing folder is a folder of new photos: not a filesystem root, and neither inside the lake
    folder nor holding it (ingest would walk the lake itself, and photos would feed on outputs)."""
    if not landing.is_dir():
        raise InvalidParam("landing_dir", f"not a folder: {landing}")
    if landing == Path(landing.anchor):
        raise InvalidParam("landing_dir", f"{landing} is a filesystem root: point it at the folder of new photos")
    if not root.startswith("s3://"):
        lake = Path(root).resolve()
        if landing.is_relative_to(lake) or lake.is_relative_to(landing):
            raise InvalidParam(
                "landing_dir", f"{landing} and the lake {lake} overlap: keep new photos in a folder outside the lake"
            )


def emr_deferrable() -> bool:
    """Read when the DAG is parsed: deferrable sensors need a running triggerer."""
    return str(setting_from_env("emr_deferrable")).strip().lower() in ("1", "true", "yes")
