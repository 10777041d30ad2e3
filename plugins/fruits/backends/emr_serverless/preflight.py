"""Pre-flight for backend=emr_serverless: what would make a job run fail, checked before one starts.

As on EMR (emr/preflight.py, whose bucket, weights and code checks run here too), each check returns
the problems it finds, each naming the setting to change, and the task fails with all of them. The
calls are read-only and in the Airflow policy of infra/aws/fruits.yaml.
"""

import json
import re
from typing import Any, NamedTuple
from urllib.parse import unquote

from botocore.exceptions import ClientError

from fruits.backends.emr import preflight as emr_checks
from fruits.backends.emr.aws import aws_error_code
from fruits.backends.emr_serverless import builders
from fruits.backends.emr_serverless.image import tag_of
from fruits.backends.jobs import SparkJob
from fruits.config.run import RunConfig, serverless_of

SERVICE = "emr-serverless.amazonaws.com"
# Service Quotas: EMR Serverless' "Max concurrent vCPUs per account" (EMR Serverless User Guide,
# endpoints-quotas.html: 16 for a new account), per region.
QUOTA = {"ServiceCode": "emr-serverless", "QuotaCode": "L-D05C8A75"}
# What an application may be in for StartJobRun (EMR Serverless API Reference, Application.state): the
# start operator starts a CREATED or STOPPED one; CREATING and STARTING end in STARTED by themselves.
RUNNABLE = ("CREATING", "CREATED", "STARTING", "STARTED", "STOPPED")
ARCHITECTURE = "X86_64"  # tensorflow-cpu has no aarch64 wheel (infra/aws/fruits.yaml, ServerlessApplication)
RELEASE = re.compile(r"^emr-7\.")  # Spark 3.5, the jobs' line (requirements.txt)


class Clients(NamedTuple):
    """boto3 clients (untyped: botocore builds their methods from its service models)."""

    s3: Any
    iam: Any
    serverless: Any
    quotas: Any
    region: str


def check_application(cfg: RunConfig, c: Clients) -> list[str]:
    section = serverless_of(cfg)
    setting = "fruits_serverless_application_id"
    try:
        app = c.serverless.get_application(applicationId=section.application_id)["application"]
    except ClientError as exc:
        return [
            f"{setting}: application {section.application_id!r} cannot be read ({aws_error_code(exc)}): set it "
            f"to the stack output {setting} (the stack makes one once ServerlessImageTag is set)"
        ]
    problems = []
    if app["state"] not in RUNNABLE:
        problems.append(
            f"{setting}: application {section.application_id} is {app['state']}: deploy the stack again for a "
            "new one and set the Variable to its id"
        )
    if app.get("type", "").upper() != "SPARK" or not RELEASE.match(app.get("releaseLabel", "")):
        problems.append(
            f"{setting}: application {section.application_id} is {app.get('type')} {app.get('releaseLabel')}; "
            "the jobs need a Spark application of an emr-7.x release (Spark 3.5)"
        )
    architecture = app.get("architecture", ARCHITECTURE)  # the API's default (CreateApplication)
    if architecture != ARCHITECTURE:
        problems.append(
            f"{setting}: application {section.application_id} runs {architecture}; tensorflow-cpu, in the "
            f"jobs' lock, exists for {ARCHITECTURE} only: use the stack's application"
        )
    image = app.get("imageConfiguration", {}).get("imageUri")
    if image is None or tag_of(image) != section.image_tag:
        problems.append(
            f"{setting}: application {section.application_id} runs "
            + (f"the image {image}" if image else "EMR's default image (Python 3.9, none of the jobs' lock)")
            + f", not this checkout's image {section.image_tag}: run `make serverless-image`, then deploy "
            f"the stack with ServerlessImageTag={section.image_tag}"
        )
    return problems


def check_job_role(cfg: RunConfig, c: Clients) -> list[str]:
    arn = serverless_of(cfg).job_role_arn
    setting = "fruits_serverless_job_role_arn"
    try:
        role = c.iam.get_role(RoleName=arn.rsplit("/", 1)[-1])["Role"]
    except ClientError as exc:
        return [f"{setting}: role {arn} not found ({aws_error_code(exc)}): set it to the stack output {setting}"]
    if role["Arn"] != arn:
        return [f"{setting}: {arn} is not the role's ARN ({role['Arn']}): set it to the stack output {setting}"]
    if SERVICE not in json.dumps(trust_policy(role)):
        return [f"{setting}: role {arn} does not trust {SERVICE}: use the stack's ServerlessJobRole"]
    return []


def trust_policy(role: dict) -> dict:
    """GetRole's trust policy (IAM answers it URL-encoded; boto3 may have decoded it already)."""
    document = role.get("AssumeRolePolicyDocument", {})
    return json.loads(unquote(document)) if isinstance(document, str) else document


def check_quota(jobs: list[SparkJob], c: Clients) -> list[str]:
    try:
        quota = c.quotas.get_service_quota(**QUOTA)["Quota"]["Value"]
    except ClientError as exc:
        return [
            f"the account's EMR Serverless vCPU quota ({QUOTA['QuotaCode']}) cannot be read in {c.region} "
            f"({aws_error_code(exc)}): the stack's AirflowPolicy grants servicequotas:GetServiceQuota"
        ]
    problem = builders.quota_problem(jobs, quota)
    return [problem] if problem else []


def run_checks(cfg: RunConfig, clients: Clients, version: str, jobs: list[SparkJob]) -> list[str]:
    """Every problem found; the bucket first."""
    problems = emr_checks.check_bucket(cfg, clients)
    if problems:
        return problems
    for check in (emr_checks.check_weights, check_application, check_job_role):
        problems += check(cfg, clients)
    return problems + check_quota(jobs, clients) + emr_checks.check_code(cfg, clients, version)
