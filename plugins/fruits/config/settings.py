"""The deployment's settings: the one table of their names, defaults and meanings.

Never credentials: AWS access is the Airflow connection `aws_default`, whose extra sets
region_name. A setting is read from the Airflow Variable `fruits_<name>`, else the environment
variable `FRUITS_<NAME>`, else its default (config.read_settings). Settings marked env-only
describe the machine Airflow runs on, or are read when the DAG is parsed (where a Variable costs a
metadata-DB query each parse), so only the environment sets them.
"""

import os
from pathlib import Path
from typing import NamedTuple

from fruits_jobs.bundle import repo_dir

REPO = repo_dir()  # the checkout: defaults for a developer machine (FRUITS_REPO where installed elsewhere)
AWS_CONN_ID = "aws_default"  # the DAG's default_args and the hooks of our own tasks


def shared_weights() -> str | None:
    """The genuine ImageNet weights beside the checkout (../shared/models/, or FRUITS_SHARED_DIR's):
    a local run's default weights when present (`make run` and the trigger form alike)."""
    from fruits_jobs.layout import DEFAULT_WEIGHTS_FILE, MODELS

    path = Path(os.environ.get("FRUITS_SHARED_DIR", REPO.parent / "shared")) / MODELS / DEFAULT_WEIGHTS_FILE
    return str(path) if path.is_file() else None


class Setting(NamedTuple):
    name: str
    default: str | None
    meaning: str
    env_only: bool = False

    @property
    def variable(self) -> str:
        return f"fruits_{self.name}"

    @property
    def env(self) -> str:
        return f"FRUITS_{self.name.upper()}"


SETTINGS = (
    Setting("bucket", "fruits-local", "S3 bucket of the lake; required for backend=emr and emr_serverless"),
    Setting("landing_dir", str(REPO / "data" / "landing"), "default of the landing_dir param"),
    Setting("weights", None, "default of the weights param (see params.py)"),
    Setting("emr_service_role", "fruits-emr-service-role", "EMR service role (name)"),
    Setting("emr_instance_profile", "fruits-emr-ec2-role", "EC2 instance profile of the cluster nodes"),
    # Pinned so a new release never changes a run silently; same Spark line as requirements.txt.
    Setting("release_label", "emr-7.12.0", "EMR release (7.x: Spark 3.5, Amazon Linux 2023)"),
    Setting("primary_instance_type", "m5.xlarge", "EC2 type of the primary node (x86_64: no Graviton)"),
    Setting(
        "subnet_id",
        None,
        "subnet of the cluster: a private one with an S3 gateway endpoint, tagged "
        "for-use-with-amazon-emr-managed-policies=true",
    ),
    Setting(
        "security_group_ids",
        None,
        "extra EC2 security groups of the cluster nodes, comma-separated; "
        "tagged for-use-with-amazon-emr-managed-policies=true",
    ),
    Setting("security_configuration", None, "EMR security configuration (name)"),
    Setting(
        "project_tag",
        "fruits",
        "value of the clusters' `project` tag: the Airflow policy operates only clusters with it",
    ),
    Setting("idle_timeout_s", "3600", "AutoTerminationPolicy: the safety net if Airflow is gone"),
    Setting(
        "serverless_application_id",
        None,
        "backend=emr_serverless: the EMR Serverless application's id (stack output)",
    ),
    Setting(
        "serverless_job_role_arn",
        None,
        "backend=emr_serverless: ARN of the jobs' runtime role (stack output)",
    ),
    Setting(
        "table_retention_hours",
        "168",
        "how long the Delta tables keep what a newer version replaced (vacuum): the time-travel window; "
        "at least the longest job's timeout (6 hours)",
        env_only=True,
    ),
    Setting(
        "precision",
        "fp32",
        "default of the precision param: fp32 or int8 (the model quantized; docs/performance.md, 'Precision')",
        env_only=True,
    ),
    Setting(
        "wheelhouse",
        None,
        "folder of the jobs' wheels (`make wheelhouse`) that stage_code uploads, so "
        "clusters install without internet; none: from PyPI, the subnet needs a NAT",
    ),
    Setting(
        "local_lake", str(REPO / "data" / "lake"), "backend=local: the folder that stands for the bucket", env_only=True
    ),
    Setting(
        "local_storage",
        "lake",
        "backend=local: 'lake' (that folder) or 's3' (the bucket of "
        "aws_default, e.g. MinIO in docker-compose, reached by Spark through S3A)",
        env_only=True,
    ),
    Setting(
        "spark_master", "local[*]", "backend=local: Spark master (docker-compose: its standalone one)", env_only=True
    ),
    Setting("backend", "local", "default of the backend param, read when the DAG is parsed", env_only=True),
    Setting(
        "emr_deferrable",
        "false",
        "EMR sensors deferrable (needs a running triggerer); read when the DAG is parsed",
        env_only=True,
    ),
)
DEFAULTS = {s.name: s.default for s in SETTINGS}
ENV_ONLY = frozenset(s.name for s in SETTINGS if s.env_only)


def setting_from_env(name: str) -> str | None:
    """env FRUITS_<NAME>, else the setting's default (no Variable: env-only settings, parse time)."""
    return os.environ.get(f"FRUITS_{name.upper()}") or DEFAULTS[name]


def describe() -> str:
    """The table as text, for docs/pipeline.md (a test keeps the copy there equal to this)."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        where = f"env `{s.env}`" if s.env_only else f"`{s.variable}` / `{s.env}`"
        default = f"`{s.default}`" if s.default is not None else "(none)"
        if s.default is not None and s.default.startswith(str(REPO)):
            default = f"`<repo>{s.default[len(str(REPO)) :]}`"
        rows.append(f"| {where} | {default} | {s.meaning} |")
    return "\n".join(rows)
