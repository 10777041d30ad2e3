"""Pre-flight for backend=emr: what would make a cluster fail, checked before one is paid for.

Each check is a small function of (cfg, clients) returning the problems it finds, each naming the
setting or param to change. The task runs them all and fails with every problem at once, before
`create_cluster` (a cluster costs ~15 minutes of boot and bootstrap before a bad setting shows).
The API calls are read-only and in the Airflow policy of infra/aws/fruits.yaml.
"""

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

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


class S3Clients(Protocol):
    """What the bucket, weights and code checks need (emr_serverless' pre-flight runs them too)."""

    @property
    def s3(self) -> Any: ...

    @property
    def region(self) -> str: ...


class PreflightFailed(RuntimeError):
    """One or more settings would make the cluster fail; the message lists them all."""


def check_bucket(cfg: RunConfig, c: S3Clients) -> list[str]:
    # GetBucketLocation: one call says both "exists" and "where" (HeadBucket says only the first).
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


def _listed(c: S3Clients, bucket: str, key: str) -> bool:
    # A listing, not HeadObject: the Airflow policy may list models/ and code/ but not read them.
    found = c.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
    return bool(found) and found[0]["Key"] == key


def check_weights(cfg: RunConfig, c: S3Clients) -> list[str]:
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


class ServiceLinkedRole(NamedTuple):
    name: str
    service: str  # the service principal: `aws iam create-service-linked-role --aws-service-name <it>`
    why: str


# Roles AWS services need in the account, which nothing in this project creates: the Airflow role may
# not create roles (no iam:CreateServiceLinkedRole), and neither may the EMR service role
# (AmazonEMRServicePolicy_v2 grants no IAM action but PassRole). Their ARNs hold the path
# aws-service-role/<service>/ (infra/aws/fruits.yaml grants iam:GetRole on exactly these).
EMR_CLEANUP_ROLE = ServiceLinkedRole(
    "AWSServiceRoleForEMRCleanup",
    "elasticmapreduce.amazonaws.com",
    # EMR Management Guide, using-service-linked-roles-cleanup: EMR creates it during a cluster's
    # creation when it is missing, which takes iam:CreateServiceLinkedRole (IAM API Reference,
    # CreateServiceLinkedRole) that the Airflow role does not have; the cluster then ends "Terminated
    # with errors: Service-linked role 'AWSServiceRoleForEMRCleanup' for EMR is required" (issue 21).
    "EMR needs it to create any cluster",
)
EC2_SPOT_ROLE = ServiceLinkedRole(
    "AWSServiceRoleForEC2Spot",
    "spot.amazonaws.com",
    # EC2 User Guide, service-linked-roles-spot-instance-requests: the console creates it, a Spot
    # request made through the API (EMR's, for the task-spot group) needs it to exist already.
    "EC2 needs it to launch the spot task nodes (fruits_task_spot_count > 0)",
)
SERVICE_LINKED_ROLES = (EMR_CLEANUP_ROLE, EC2_SPOT_ROLE)


def service_linked_roles_needed(cfg: RunConfig) -> list[ServiceLinkedRole]:
    return [EMR_CLEANUP_ROLE, *([EC2_SPOT_ROLE] if emr_of(cfg).task_spot_count > 0 else [])]


def check_service_linked_roles(cfg: RunConfig, c: Clients) -> list[str]:
    problems = []
    for role in service_linked_roles_needed(cfg):
        try:
            c.iam.get_role(RoleName=role.name)
        except ClientError as exc:
            code = aws_error_code(exc)
            fix = (
                f"create it once for the account: aws iam create-service-linked-role --aws-service-name {role.service}"
                if code == "NoSuchEntity"
                else "attach the stack's AirflowPolicy to the role Airflow runs as (it may read this role)"
            )
            problems.append(f"service-linked role {role.name} cannot be found ({code}); {role.why}: {fix}")
    return problems


def _tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def _untagged(resources: list[dict], id_key: str) -> list[str]:
    key, value = EMR_MANAGED_POLICY_TAG["Key"], EMR_MANAGED_POLICY_TAG["Value"]
    return [r[id_key] for r in resources if _tags(r).get(key) != value]


def tag_command(resource_ids: list[str], region: str) -> str:
    key, value = EMR_MANAGED_POLICY_TAG["Key"], EMR_MANAGED_POLICY_TAG["Value"]
    return f"aws ec2 create-tags --region {region} --resources {' '.join(resource_ids)} --tags Key={key},Value={value}"


def cluster_subnets(cfg: RunConfig, c: Clients) -> tuple[list[dict], list[str]]:
    """(the subnets EMR may launch the cluster in, problems): fruits_subnet_id when set; else each of
    the default VPC's default subnets. Without Ec2SubnetId a cluster launches in EC2-Classic where the
    account has it (botocore's EMR model, JobFlowInstancesConfig.Ec2SubnetId); EC2-Classic is retired,
    so it lands, like any EC2 launch without a subnet, in a default subnet of the default VPC, in an
    Availability Zone EMR picks."""
    emr = emr_of(cfg)
    if emr.subnet_id:
        try:
            return c.ec2.describe_subnets(SubnetIds=[emr.subnet_id])["Subnets"], []
        except ClientError as exc:
            return [], [f"fruits_subnet_id: subnet {emr.subnet_id!r} not found in {c.region} ({aws_error_code(exc)})"]
    vpcs = c.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    subnets = (
        c.ec2.describe_subnets(
            Filters=[
                {"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]},
                {"Name": "default-for-az", "Values": ["true"]},
            ]
        )["Subnets"]
        if vpcs
        else []
    )
    if not subnets:
        return [], [
            f"fruits_subnet_id: not set, and {c.region} has no default VPC with default subnets for EMR to "
            f"pick from: set fruits_subnet_id to a subnet tagged {EMR_MANAGED_POLICY_TAG['Key']}=true"
        ]
    return subnets, []


def check_network(cfg: RunConfig, c: Clients) -> list[str]:
    """The subnet(s) the cluster may use and their VPC carry the tag AmazonEMRServicePolicy_v2 acts on:
    the subnet for RunInstances (statement CreateInTaggedNetwork), the VPC for the security groups
    EMR creates when none are given (statement CreateDefaultSecurityGroupInVPCWithEMRTags)."""
    subnets, problems = cluster_subnets(cfg, c)
    if not subnets:
        return problems
    key, value = EMR_MANAGED_POLICY_TAG["Key"], EMR_MANAGED_POLICY_TAG["Value"]
    untagged = _untagged(subnets, "SubnetId")
    if untagged:
        which = (
            f"fruits_subnet_id: subnet {untagged[0]} lacks"
            if emr_of(cfg).subnet_id
            else "fruits_subnet_id is not set, so EMR picks a default subnet of the default VPC: "
            f"{', '.join(untagged)} lack"
        )
        problems.append(
            f"{which} the tag {key}={value}, which the EMR service role's managed policy requires to launch "
            f"instances there: {tag_command(untagged, c.region)}"
        )
    vpc_ids = sorted({s["VpcId"] for s in subnets})
    vpcs = c.ec2.describe_vpcs(VpcIds=vpc_ids)["Vpcs"]
    untagged_vpcs = _untagged(vpcs, "VpcId")
    if untagged_vpcs:
        problems.append(
            f"VPC {', '.join(untagged_vpcs)} (of the cluster's subnet) lacks the tag {key}={value}, which the EMR "
            f"service role's managed policy requires to create the cluster's security groups there: "
            f"{tag_command(untagged_vpcs, c.region)}"
        )
    return problems


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


def check_code(cfg: RunConfig, c: S3Clients, version: str) -> list[str]:
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
    check_service_linked_roles,
    check_network,
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
