"""A small evaluator of IAM identity policies, for checking our policies offline.

Scope: enough of IAM's policy evaluation for infra/iam/airflow_role_policy.json and the calls the
pipeline makes, nothing more. It models
  - which IAM action(s) and resource ARN each S3/EMR API call is authorised as, including the
    implied iam:PassRole of RunJobFlow (one per role), and the condition keys our policy reads
    (aws:RequestTag/* on RunJobFlow, elasticmapreduce:ResourceTag/* on cluster calls,
    iam:PassedToService, s3:prefix on ListBucket);
  - Allow statements with Action/Resource wildcards and StringEquals/StringLike conditions.
It does NOT model: Deny statements, NotAction/NotResource, resource-based policies (bucket
policies), permission boundaries, SCPs, session policies, or any operator other than the two above;
an unknown operator raises KeyError rather than passing silently. Real AWS may still refuse what
this allows (see the AWS-side issue for what moto and this evaluator cannot tell).
"""
import json
from fnmatch import fnmatchcase
from pathlib import Path

# S3 API operation -> the IAM action that authorises it (AWS S3 User Guide, "Actions, resources, and
# condition keys for Amazon S3"); operations not listed map to s3:<Operation>.
S3_ACTIONS = {
    "ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket",
    "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject", "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject", "AbortMultipartUpload": "s3:AbortMultipartUpload",
}


def load_policy(path: Path, bucket: str) -> dict:
    """A policy document of infra/iam/, with its FRUITS_BUCKET placeholder set to `bucket`."""
    return json.loads(Path(path).read_text().replace("FRUITS_BUCKET", bucket))


def iam_requests(service: str, operation: str, params: dict, cluster_tags, region: str, account: str) -> list:
    """What IAM evaluates for one API call: [(action, resource, condition context)].

    cluster_tags(cluster_id) -> {key: value}: the tags of an existing cluster."""
    if service == "s3":
        action = S3_ACTIONS.get(operation, f"s3:{operation}")
        if action == "s3:ListBucket":
            return [(action, f"arn:aws:s3:::{params['Bucket']}", {"s3:prefix": params.get("Prefix", "")})]
        return [(action, f"arn:aws:s3:::{params['Bucket']}/{params['Key']}", {})]
    if service == "emr":
        action = f"elasticmapreduce:{operation}"
        if operation == "RunJobFlow":
            tags = {t["Key"]: t["Value"] for t in params.get("Tags", [])}
            ctx = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
            # RunJobFlow implies iam:PassRole on both roles; botocore makes no call for it.
            return [(action, "*", ctx),
                    ("iam:PassRole", f"arn:aws:iam::{account}:role/{params['ServiceRole']}",
                     {"iam:PassedToService": "elasticmapreduce.amazonaws.com"}),
                    ("iam:PassRole", f"arn:aws:iam::{account}:role/{params['JobFlowRole']}",
                     {"iam:PassedToService": "ec2.amazonaws.com"})]
        cluster = params.get("ClusterId") or params.get("JobFlowId") or params["JobFlowIds"][0]
        ctx = {f"elasticmapreduce:ResourceTag/{k}": v for k, v in cluster_tags(cluster).items()}
        return [(action, f"arn:aws:elasticmapreduce:{region}:{account}:cluster/{cluster}", ctx)]
    return [(f"{service}:{operation}", "*", {})]


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


CONDITION_OPERATORS = {"StringEquals": lambda value, expected: value == expected, "StringLike": fnmatchcase}


def is_allowed(policy: dict, action: str, resource: str, context: dict) -> bool:
    """True when an Allow statement matches action, resource and all its conditions."""
    for st in policy["Statement"]:
        if st["Effect"] != "Allow":
            continue
        if not any(fnmatchcase(action.lower(), a.lower()) for a in _listed(st["Action"])):
            continue
        if not any(fnmatchcase(resource, r) for r in _listed(st["Resource"])):
            continue
        ok = True
        for operator, tests in st.get("Condition", {}).items():
            match = CONDITION_OPERATORS[operator]
            for key, expected in tests.items():
                value = context.get(key)
                ok &= value is not None and any(match(value, e) for e in _listed(expected))
        if ok:
            return True
    return False
