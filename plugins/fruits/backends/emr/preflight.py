"""Pre-flight for backend=emr: what would make a cluster fail, checked before one is paid for.

Each check is a small function of (cfg, clients) returning the problems it finds, each naming the
setting or param to change. The task runs them all and fails with every problem at once, before
`create_cluster` (a cluster costs ~15 minutes of boot and bootstrap before a bad setting shows).
The API calls are read-only and in the Airflow policy of infra/aws/fruits.yaml.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from botocore.exceptions import ClientError

from fruits.backends.emr.aws import aws_error_code
from fruits.backends.emr.builders import EMR_MANAGED_POLICY_TAG
from fruits.config.run import RunConfig, emr_of
from fruits_jobs import layout
from fruits_jobs.bundle import SHIPPED


class Clients(NamedTuple):
    """boto3 clients (untyped: botocore builds their methods from its service models)."""

    s3: Any
    iam: Any
    ec2: Any
    region: str


class PreflightFailed(RuntimeError):
    """One or more settings would make the cluster fail; the message lists them all."""


def check_bucket(cfg: RunConfig, c: Clients) -> list[str]:
    # GetBucketLocation: one call says both "exists" and "where" (HeadBucket needs ListBucket on
    # the whole bucket, which the Airflow policy grants per prefix only).
    try:
        location = c.s3.get_bucket_location(Bucket=cfg.bucket)["LocationConstraint"] or "us-east-1"
    except ClientError as exc:
        return [
            f"fruits_bucket: bucket {cfg.bucket!r} cannot be read ({aws_error_code(exc)}): create it with "
            "infra/aws/fruits.yaml, or set fruits_bucket to the stack's output"
        ]
    if location != c.region:
        return [
            f"fruits_bucket: bucket {cfg.bucket!r} is in {location}, the aws_default connection in {c.region}: "
            f"set region_name={location} in the connection's extra, or use a bucket in {c.region}"
        ]
    return []


def _listed(c: Clients, bucket: str, key: str) -> bool:
    # A listing, not HeadObject: the Airflow policy may list models/ and code/ but not read them.
    found = c.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
    return bool(found) and found[0]["Key"] == key


def check_weights(cfg: RunConfig, c: Clients) -> list[str]:
    if not cfg.weights.startswith("s3://"):
        return []
    bucket, key = S3Hook.parse_s3_url(cfg.weights)
    try:
        if _listed(c, bucket, key):
            return []
    except ClientError as exc:
        return [f"weights: {cfg.weights} cannot be listed ({aws_error_code(exc)})"]
    return [
        f"weights: {cfg.weights} does not exist: upload the .weights.h5 file there, or pass a local "
        "file as the weights param (the DAG stages it)"
    ]


def check_roles(cfg: RunConfig, c: Clients) -> list[str]:
    emr = emr_of(cfg)
    problems = []
    try:
        c.iam.get_role(RoleName=emr.service_role)
    except ClientError as exc:
        problems.append(
            f"fruits_emr_service_role: role {emr.service_role!r} not found ({aws_error_code(exc)}): "
            "set it to the stack output fruits_emr_service_role"
        )
    try:
        c.iam.get_instance_profile(InstanceProfileName=emr.instance_profile)
    except ClientError as exc:
        problems.append(
            f"fruits_emr_instance_profile: instance profile {emr.instance_profile!r} not found "
            f"({aws_error_code(exc)}): set it to the stack output fruits_emr_instance_profile"
        )
    return problems


def check_subnet(cfg: RunConfig, c: Clients) -> list[str]:
    emr = emr_of(cfg)
    if not emr.subnet_id:
        return []
    try:
        (subnet,) = c.ec2.describe_subnets(SubnetIds=[emr.subnet_id])["Subnets"]
    except ClientError as exc:
        return [f"fruits_subnet_id: subnet {emr.subnet_id!r} not found in {c.region} ({aws_error_code(exc)})"]
    tags = {t["Key"]: t["Value"] for t in subnet.get("Tags", [])}
    key, value = EMR_MANAGED_POLICY_TAG["Key"], EMR_MANAGED_POLICY_TAG["Value"]
    if tags.get(key) != value:
        return [
            f"fruits_subnet_id: subnet {emr.subnet_id} lacks the tag {key}={value}, which the EMR service "
            f"role's managed policy requires: aws ec2 create-tags --resources {emr.subnet_id} "
            f"--tags Key={key},Value={value}"
        ]
    return []


def check_instance_types(cfg: RunConfig, c: Clients) -> list[str]:
    emr = emr_of(cfg)
    wanted = {"instance_type": emr.instance_type, "fruits_primary_instance_type": emr.primary_instance_type}
    offered = {
        o["InstanceType"]
        for o in c.ec2.describe_instance_type_offerings(
            LocationType="region", Filters=[{"Name": "instance-type", "Values": sorted(set(wanted.values()))}]
        )["InstanceTypeOfferings"]
    }
    return [f"{name}: {itype} is not offered in {c.region}" for name, itype in wanted.items() if itype not in offered]


def check_code(cfg: RunConfig, c: Clients, version: str) -> list[str]:
    prefix = layout.code_prefix(version)
    staged = {o["Key"] for o in c.s3.list_objects_v2(Bucket=cfg.bucket, Prefix=prefix).get("Contents", [])}
    missing = [name for name in SHIPPED if prefix + name not in staged]  # one listing for the bundle
    return (
        [
            f"code {version}: {', '.join(missing)} missing under s3://{cfg.bucket}/{prefix} (stage_code did not "
            "finish: clear it)"
        ]
        if missing
        else []
    )


# Run once the bucket is known to be there (the S3 checks mean nothing without it).
CHECKS: list[Callable[[RunConfig, Clients], list[str]]] = [
    check_weights,
    check_roles,
    check_subnet,
    check_instance_types,
]


def run_checks(cfg: RunConfig, clients: Clients, version: str) -> list[str]:
    """Every problem found; the bucket first."""
    problems = check_bucket(cfg, clients)
    if problems:
        return problems
    for check in CHECKS:
        problems += check(cfg, clients)
    return problems + check_code(cfg, clients, version)
