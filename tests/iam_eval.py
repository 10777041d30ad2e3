"""A small evaluator of IAM identity policies, for checking our policies offline.

Scope: enough of IAM's policy evaluation for the policies of infra/aws/fruits.yaml (read through
tests/cfn_template.py) and the calls the pipeline makes, nothing more. It models
  - which IAM action(s) and resource ARN each S3/EMR API call is authorised as, including what a
    call implies without botocore making a call for it: RunJobFlow's iam:PassRole (one per role;
    the instance profile is assumed to be named like its role, as the template makes it) and, when
    the request has Tags, elasticmapreduce:AddTags (tag on create: EMR Management Guide,
    emr-fine-grained-cluster-access.html);
  - the condition keys our policies read: aws:RequestTag/* on RunJobFlow and its AddTags,
    aws:ResourceTag/* on calls on an existing cluster (the key the Service Authorization Reference
    documents for the cluster resource type; elasticmapreduce:ResourceTag/* is NOT set, so a policy
    using it fails here as linters say it may in AWS), iam:PassedToService, s3:prefix on ListBucket;
  - Allow statements with Action/Resource wildcards and StringEquals/StringLike conditions.
It does NOT model: Deny statements, NotAction/NotResource, resource-based policies (bucket
policies), permission boundaries, SCPs, session policies, or any operator other than the two above;
an unknown operator raises KeyError rather than passing silently. Real AWS may still refuse what
this allows (see the AWS-side issue for what moto and this evaluator cannot tell).
"""

from fnmatch import fnmatchcase

# S3 API operation -> the IAM action that authorises it (AWS S3 User Guide, "Actions, resources, and
# condition keys for Amazon S3"); operations not listed map to s3:<Operation>.
S3_ACTIONS = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
}


# Service-linked roles are created under the path aws-service-role/<service principal>/ (IAM User
# Guide, "Create a service-linked role"); GetRole names a role, IAM authorises its ARN, path included.
def _role_arn(account: str, name: str) -> str:
    from fruits.backends.emr.preflight import SERVICE_LINKED_ROLES

    service = {role.name: role.service for role in SERVICE_LINKED_ROLES}.get(name)
    return f"arn:aws:iam::{account}:role/" + (f"aws-service-role/{service}/" if service else "") + name


def iam_requests(service: str, operation: str, params: dict, cluster_tags, region: str, account: str) -> list:
    """What IAM evaluates for one API call: [(action, resource, condition context)].

    cluster_tags(cluster_id) -> {key: value}: the tags of an existing cluster."""
    if service == "s3":
        action = S3_ACTIONS.get(operation, f"s3:{operation}")
        if action == "s3:ListBucket":
            return [(action, f"arn:aws:s3:::{params['Bucket']}", {"s3:prefix": params.get("Prefix", "")})]
        if "Key" not in params:  # a bucket-level call (GetBucketLocation, ...)
            return [(action, f"arn:aws:s3:::{params['Bucket']}", {})]
        return [(action, f"arn:aws:s3:::{params['Bucket']}/{params['Key']}", {})]
    if service == "iam" and operation in ("GetRole", "GetInstanceProfile"):
        if operation == "GetRole":
            return [("iam:GetRole", _role_arn(account, params["RoleName"]), {})]
        name = params["InstanceProfileName"]
        return [("iam:GetInstanceProfile", f"arn:aws:iam::{account}:instance-profile/{name}", {})]
    if service == "emr":
        action = f"elasticmapreduce:{operation}"
        if operation == "RunJobFlow":
            tags = {t["Key"]: t["Value"] for t in params.get("Tags", [])}
            ctx = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
            # RunJobFlow implies iam:PassRole on both roles and, with Tags, AddTags on the new cluster;
            # botocore makes no call for either.
            implied = (
                [("elasticmapreduce:AddTags", f"arn:aws:elasticmapreduce:{region}:{account}:cluster/*", ctx)]
                if tags
                else []
            )
            return [
                (action, "*", ctx),
                *implied,
                (
                    "iam:PassRole",
                    f"arn:aws:iam::{account}:role/{params['ServiceRole']}",
                    {"iam:PassedToService": "elasticmapreduce.amazonaws.com"},
                ),
                (
                    "iam:PassRole",
                    f"arn:aws:iam::{account}:role/{params['JobFlowRole']}",
                    {"iam:PassedToService": "ec2.amazonaws.com"},
                ),
            ]
        if operation == "ListClusters":  # no resource-level permissions
            return [(action, "*", {})]
        cluster = (
            params.get("ClusterId") or params.get("JobFlowId") or params.get("ResourceId") or params["JobFlowIds"][0]
        )
        ctx = {f"aws:ResourceTag/{k}": v for k, v in cluster_tags(cluster).items()}
        ctx.update({f"aws:RequestTag/{t['Key']}": t["Value"] for t in params.get("Tags", [])})
        return [(action, f"arn:aws:elasticmapreduce:{region}:{account}:cluster/{cluster}", ctx)]
    if service == "emr-serverless":
        # Service Authorization Reference, EMR Serverless: StartJobRun and ListJobRuns act on the
        # application, Get/CancelJobRun on its job run; StartJobRun implies iam:PassRole on the job's
        # role (its iam:PassedToService is emr-serverless.amazonaws.com), with no call for it.
        app = f"arn:aws:emr-serverless:{region}:{account}:/applications/{params['applicationId']}"
        if "jobRunId" in params:
            return [(f"emr-serverless:{operation}", f"{app}/jobruns/{params['jobRunId']}", {})]
        passed = (
            [("iam:PassRole", params["executionRoleArn"], {"iam:PassedToService": "emr-serverless.amazonaws.com"})]
            if operation == "StartJobRun"
            else []
        )
        return [(f"emr-serverless:{operation}", app, {}), *passed]
    if service == "service-quotas":  # the IAM prefix is servicequotas (Service Authorization Reference)
        return [(f"servicequotas:{operation}", "*", {})]
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


def s3_missing_key_error(policy: dict, bucket: str, operation: str = "GetObject") -> str:
    """The error code S3 answers a GetObject/HeadObject of a key that does not exist with: NoSuchKey
    (HEAD: 404) when the caller may list the bucket, AccessDenied (HEAD: 403) when it may not (S3 API
    Reference, GetObject and HeadObject, "Permissions": the answer for a missing key depends on
    s3:ListBucket on the bucket).

    AWS does not document whether an s3:prefix condition on that ListBucket counts here, so the
    permission is evaluated without s3:prefix in the context: only a grant without a prefix condition
    earns the 404 (the conservative reading; infra/aws/fruits.yaml grants that)."""
    may_list = is_allowed(policy, "s3:ListBucket", f"arn:aws:s3:::{bucket}", {})
    if operation == "HeadObject":  # a HEAD response has no body: its code is the status
        return "404" if may_list else "403"
    return "NoSuchKey" if may_list else "AccessDenied"
