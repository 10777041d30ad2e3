"""The IAM policies of infra/aws/fruits.yaml (their one source): valid documents, least privilege,
and the evaluator the `aws` fixture uses (every moto-driven test checks each AWS call it made against
the Airflow policy)."""

import functools

import pytest

from airflow_fixtures import ACCOUNT, BUCKET, REGION, template_policy
from cfn_template import Stack
from iam_eval import iam_requests, is_allowed, s3_missing_key_error
from s3_call_paths import AIRFLOW, EMR_INSTANCE, SERVERLESS_JOB, example_key

POLICY = template_policy("AirflowPolicy")
TAGS = {"project": "fruits", "for-use-with-amazon-emr-managed-policies": "true"}
RUN_TAGS = [{"Key": "project", "Value": "fruits"}, {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}]
ROLES = {"ServiceRole": "fruits-emr-service-role", "JobFlowRole": "fruits-emr-ec2-role"}


def allowed(service, op, params, tags=TAGS, policy=POLICY):
    return all(is_allowed(policy, *req) for req in iam_requests(service, op, params, lambda _: tags, REGION, ACCOUNT))


def test_documents_are_valid_and_name_no_wildcard_actions():
    for name, doc in Stack(BUCKET).documents().items():
        assert doc["Version"] == "2012-10-17", name
        for st in doc["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            if name == "LakeBucketPolicy":  # the TLS-only Deny covers every action on purpose
                assert st["Effect"] == "Deny" and actions == ["s3:*"]
                continue
            assert not [a for a in actions if "*" in a], (name, st.get("Sid"))
            assert st["Effect"] == "Allow"


def test_the_job_flow_is_allowed_by_the_policy_as_built():
    """The real RunJobFlow request (fruits/emr.py), with what it implies: PassRole and AddTags."""
    from fruits.backends.emr import builders as emr

    from test_emr_builders import CFG, RUN_ID, VERSION, with_emr

    flow = emr.job_flow_overrides(CFG, VERSION, RUN_ID)
    requests = iam_requests("emr", "RunJobFlow", flow, None, REGION, ACCOUNT)
    assert {action for action, _, _ in requests} == {
        "elasticmapreduce:RunJobFlow",
        "elasticmapreduce:AddTags",
        "iam:PassRole",
    }
    assert all(is_allowed(POLICY, *req) for req in requests)
    # another project tag, set on both sides (setting fruits_project_tag, parameter ProjectTag)
    other = Stack(BUCKET, account=ACCOUNT, region=REGION, ProjectTag="lab").policy("AirflowPolicy")
    flow = emr.job_flow_overrides(with_emr(project_tag="lab"), VERSION, RUN_ID)
    flow.update(ServiceRole="lab-emr-service-role", JobFlowRole="lab-emr-ec2-role")
    assert all(is_allowed(other, *req) for req in iam_requests("emr", "RunJobFlow", flow, None, REGION, ACCOUNT))


def test_run_job_flow_with_tags_needs_add_tags():
    """Blocker 1: a policy granting RunJobFlow alone is refused (tag on create is AddTags too)."""
    without_add_tags = {
        "Statement": [
            dict(st, Action="elasticmapreduce:RunJobFlow") if st.get("Sid") == "CreateOnlyTaggedClusters" else st
            for st in POLICY["Statement"]
        ]
    }
    assert not allowed("emr", "RunJobFlow", {"Tags": RUN_TAGS, **ROLES}, policy=without_add_tags)
    assert allowed("emr", "RunJobFlow", {"Tags": RUN_TAGS, **ROLES})


def test_cluster_conditions_use_the_documented_key():
    """Blocker 6: aws:ResourceTag/project, not elasticmapreduce:ResourceTag/project."""
    (st,) = [st for st in POLICY["Statement"] if st["Sid"] == "OperateOnlyOwnClusters"]
    assert st["Condition"] == {"StringEquals": {"aws:ResourceTag/project": "fruits"}}
    old_form = {"Statement": [dict(st, Condition={"StringEquals": {"elasticmapreduce:ResourceTag/project": "fruits"}})]}
    assert not allowed("emr", "DescribeCluster", {"ClusterId": "j-1"}, policy=old_form)


def test_the_calls_the_pipeline_makes_are_allowed():
    assert allowed("s3", "ListObjectsV2", {"Bucket": BUCKET, "Prefix": "raw/batch_id=1/"})
    assert allowed("s3", "PutObject", {"Bucket": BUCKET, "Key": "raw/batch_id=1/Banana/1.jpg"})
    # which batches are published: the features table's log, then each published run's record
    assert allowed("s3", "GetObject", {"Bucket": BUCKET, "Key": "features/_delta_log/00000000000000000003.json"})
    assert allowed("s3", "GetObject", {"Bucket": BUCKET, "Key": "batch_runs/batch_id=1/r1.json"})
    assert allowed("s3", "PutObject", {"Bucket": BUCKET, "Key": "batch_runs/_layout.json"})
    # the current embedding space: the vectors table's log, then the run's record (has_work, publish_summary)
    assert allowed("s3", "GetObject", {"Bucket": BUCKET, "Key": "vectors/_delta_log/00000000000000000002.json"})
    assert allowed("s3", "GetObject", {"Bucket": BUCKET, "Key": "pca/spaces/s1/runs/r1/metrics.json"})
    # publish_summary writes the run report beside the PCA run's metrics.json, which it never changes
    assert allowed("s3", "PutObject", {"Bucket": BUCKET, "Key": "pca/spaces/s1/runs/r1/run_report.json"})
    # ... then indexes the vectors the space's commit names, beside the space
    assert allowed("s3", "ListObjectsV2", {"Bucket": BUCKET, "Prefix": "vectors/s1/b1/r1/"})
    assert allowed("s3", "GetObject", {"Bucket": BUCKET, "Key": "vectors/s1/b1/r1/part-0.parquet"})
    assert allowed("s3", "PutObject", {"Bucket": BUCKET, "Key": "pca/spaces/s1/index/pieces/ab12.usearch"})
    # ... and deletes the pieces a merge of tiers retired (derived data, in the index's own folder)
    assert allowed("s3", "DeleteObject", {"Bucket": BUCKET, "Key": "pca/spaces/s1/index/pieces/ab12.usearch"})
    # ingest merges the held-photo index's pieces in tiers and retires those it merged
    assert allowed("s3", "PutObject", {"Bucket": BUCKET, "Key": "manifests/held/pieces/ab12.parquet"})
    assert allowed("s3", "DeleteObject", {"Bucket": BUCKET, "Key": "manifests/held/pieces/ab12.parquet"})
    assert allowed("emr", "CancelSteps", {"ClusterId": "j-1"})
    assert allowed("emr", "RunJobFlow", {"Tags": RUN_TAGS, **ROLES})
    assert allowed("emr", "TerminateJobFlows", {"JobFlowIds": ["j-1"]})


@pytest.mark.parametrize(
    "service,op,params,tags",
    [
        ("s3", "PutObject", {"Bucket": BUCKET, "Key": "features/batch_id=1/x.parquet"}, TAGS),  # the jobs' output
        ("s3", "GetObject", {"Bucket": BUCKET, "Key": "raw/batch_id=1/Banana/1.jpg"}, TAGS),  # never reads photos
        (
            "s3",
            "GetObject",
            {"Bucket": BUCKET, "Key": "features/batch_id=1/run=r1/part-0.parquet"},
            TAGS,
        ),  # nor features
        ("s3", "GetObject", {"Bucket": BUCKET, "Key": "batch_runs/batch_id=1/r1.moments.npz"}, TAGS),  # nor moments
        ("s3", "PutObject", {"Bucket": BUCKET, "Key": "batch_runs/batch_id=1/r1.json"}, TAGS),  # records: the job's
        ("s3", "ListObjectsV2", {"Bucket": "someone-elses", "Prefix": "features/"}, TAGS),  # listing: our bucket only
        ("s3", "PutObject", {"Bucket": "someone-elses", "Key": "raw/x.jpg"}, TAGS),
        ("s3", "ListObjectsV2", {"Bucket": "someone-elses", "Prefix": ""}, TAGS),
        ("iam", "CreateServiceLinkedRole", {"AWSServiceName": "elasticmapreduce.amazonaws.com"}, TAGS),
        ("iam", "GetRole", {"RoleName": "AdminRole"}, TAGS),  # reads only the roles the pre-flight checks
        ("s3", "DeleteObject", {"Bucket": BUCKET, "Key": "raw/x.jpg"}, TAGS),
        # a batch's manifest, lease and own held-photo file are never deleted: only the derived pieces
        ("s3", "DeleteObject", {"Bucket": BUCKET, "Key": "manifests/batch_id=1.json"}, TAGS),
        ("s3", "DeleteObject", {"Bucket": BUCKET, "Key": "manifests/batch_id=1.held.parquet"}, TAGS),
        ("s3", "DeleteObject", {"Bucket": BUCKET, "Key": "manifests/held/catalog.json"}, TAGS),
        # the space is the PCA job's: Airflow never commits, writes vectors or a basis, nor deletes in it
        ("s3", "PutObject", {"Bucket": BUCKET, "Key": "pca/_commits/r1.json"}, TAGS),
        ("s3", "PutObject", {"Bucket": BUCKET, "Key": "vectors/s1/b1/r1/part-0.parquet"}, TAGS),
        ("s3", "PutObject", {"Bucket": BUCKET, "Key": "pca/spaces/s1/basis.npz"}, TAGS),
        ("s3", "PutObject", {"Bucket": BUCKET, "Key": "pca/spaces/s1/runs/r1/state.npz"}, TAGS),
        ("s3", "DeleteObject", {"Bucket": BUCKET, "Key": "pca/spaces/s1/runs/r1/metrics.json"}, TAGS),
        ("s3", "PutObject", {"Bucket": BUCKET, "Key": "pca/spaces/s1/runs/r1/metrics.json"}, TAGS),  # the job's
        ("s3", "DeleteObject", {"Bucket": BUCKET, "Key": "pca/spaces/s1/basis.npz"}, TAGS),
        # the layout before issue 20: nothing there to write any more
        ("s3", "PutObject", {"Bucket": BUCKET, "Key": "pca/batch_id=1/run=r1/metrics.json"}, TAGS),
        ("emr", "TerminateJobFlows", {"JobFlowIds": ["j-other"]}, {"project": "other"}),  # not our cluster
        ("emr", "RunJobFlow", {"Tags": [], **ROLES}, TAGS),  # untagged cluster
        ("emr", "RunJobFlow", {"Tags": RUN_TAGS[:1], **ROLES}, TAGS),  # not for the EMR managed policies
        (
            "emr",
            "RunJobFlow",
            {"Tags": RUN_TAGS, "ServiceRole": "AdminRole", "JobFlowRole": "fruits-emr-ec2-role"},
            TAGS,
        ),  # PassRole on another role
        (
            "emr",
            "AddTags",
            {"ResourceId": "j-other", "Tags": [{"Key": "owner", "Value": "x"}]},
            {"project": "other"},
        ),  # tagging someone else's cluster
        ("emr", "SetTerminationProtection", {"JobFlowIds": ["j-1"], "TerminationProtected": True}, TAGS),
        ("sts", "GetCallerIdentity", {}, TAGS),
    ],
)
def test_everything_else_is_denied(service, op, params, tags):
    assert not allowed(service, op, params, tags)


def test_the_evaluator_refuses_what_it_does_not_model():
    with pytest.raises(KeyError):
        is_allowed(
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "s3:GetObject",
                        "Resource": "*",
                        "Condition": {"ArnLike": {"aws:SourceArn": "*"}},
                    }
                ]
            },
            "s3:GetObject",
            "arn:aws:s3:::b/k",
            {},
        )


INSTANCE_POLICY = template_policy("EmrInstancePolicy")


@pytest.mark.parametrize(
    "operation,key,allowed_",
    [
        ("GetObject", "manifests/batch_id=1.json", True),  # the features job reads exactly its manifest
        ("GetObject", "raw/batch_id=1/Banana/1.jpg", True),
        ("PutObject", "batch_runs/batch_id=1/r1.json", True),  # the jobs record their runs
        ("PutObject", "features/_delta_log/00000000000000000001.json", True),  # ... publish them
        ("DeleteObject", "features/batch_id=1/run=r0/part-0.parquet", True),  # ... and vacuum old runs
        ("PutObject", "manifests/batch_id=1.json", False),  # only Airflow writes manifests
        ("DeleteObject", "raw/batch_id=1/Banana/1.jpg", False),  # photos are never deleted
        ("PutObject", "logs/emr/j-1/node/i-1/bootstrap-actions/1/stdout.gz", True),
        # the ONNX export of the weights, kept by content (and its hidden name before the rename)
        ("PutObject", "models/mobilenet_v2_ab12_224px_tf2onnx-1.17.0_opset-17_tf-2.19.1_keras-3.10.0.onnx", True),
        (
            "DeleteObject",
            "models/.0f3c.mobilenet_v2_ab12_224px_tf2onnx-1.17.0_opset-17_tf-2.19.1_keras-3.10.0.onnx",
            True,
        ),
        ("PutObject", "models/mobilenet_v2_1.0_224_imagenet_no_top.weights.h5", False),  # the weights stay as staged
        # the PCA job reads the batches' moments, keeps the space, and retires the spaces before the last
        ("GetObject", "batch_runs/batch_id=1/r1.moments.npz", True),
        ("PutObject", "pca/spaces/s1/runs/r2/metrics.json", True),
        ("DeleteObject", "pca/_commits/r1.json", True),  # the commits before the vectors table
        ("GetObject", "pca/spaces/s1/runs/r1/state.npz", True),
        ("PutObject", "vectors/s2/b1/r2/part-0.parquet", True),
        ("PutObject", "vectors/_delta_log/00000000000000000001.json", True),  # the vectors table's commit
        ("DeleteObject", "vectors/s0/b1/r0/part-0.parquet", True),  # a retired space's vectors
        ("PutObject", "pca/spaces/s2/basis.npz", True),
        ("DeleteObject", "pca/spaces/s0/model/metadata/part-00000", True),
        ("DeleteObject", "pca/batch_id=1/run=r0/reduced/part-0.parquet", True),  # the layout before spaces
    ],
)
def test_the_cluster_reads_and_writes_what_the_jobs_need_and_no_more(operation, key, allowed_):
    (request,) = iam_requests("s3", operation, {"Bucket": BUCKET, "Key": key}, lambda _: {}, REGION, ACCOUNT)
    assert is_allowed(INSTANCE_POLICY, *request) is allowed_


# Blocker 3: S3A (s3:// since EMR 7.10) probes a path's own key (HEAD `features`) as well as the keys
# under it; each prefix the jobs read or write, in both forms (Hadoop's assumed_roles.md).
READ = ["raw", "manifests", "code", "models"]
WRITE = ["features", "rejects", "pca"]


@pytest.mark.parametrize("prefix", READ + WRITE)
def test_s3a_probes_of_every_prefix_are_allowed(prefix):
    for key in (prefix, f"{prefix}/", f"{prefix}/batch_id=1", f"{prefix}/batch_id=1/x"):
        (request,) = iam_requests("s3", "HeadObject", {"Bucket": BUCKET, "Key": key}, lambda _: {}, REGION, ACCOUNT)
        assert is_allowed(INSTANCE_POLICY, *request), key
        if prefix in WRITE:
            for op in ("PutObject", "DeleteObject"):
                (request,) = iam_requests("s3", op, {"Bucket": BUCKET, "Key": key}, lambda _: {}, REGION, ACCOUNT)
                assert is_allowed(INSTANCE_POLICY, *request), (op, key)
    (listing,) = iam_requests(
        "s3", "ListObjectsV2", {"Bucket": BUCKET, "Prefix": f"{prefix}/"}, lambda _: {}, REGION, ACCOUNT
    )
    assert is_allowed(INSTANCE_POLICY, *listing)
    # ... and no neighbour: `features2` is not `features`
    (request,) = iam_requests(
        "s3", "GetObject", {"Bucket": BUCKET, "Key": f"{prefix}2/x"}, lambda _: {}, REGION, ACCOUNT
    )
    assert not is_allowed(INSTANCE_POLICY, *request)


# Issue 21, point 4: every S3 call of either role is allowed, and one that may find no key gets S3's
# 404 rather than its 403 (a caller who may not list the bucket): the list is tests/s3_call_paths.py.
def _calls(role: str, calls) -> list:
    return [pytest.param(role, c, id=f"{role}-{c.operation}-{c.key}") for c in calls]


@functools.cache  # one template read per role, not per call
def role_policy(role: str) -> dict:
    """A managed policy, or a role's whole identity policy: its managed policies' and inline ones'
    statements together (the roles of the template attach theirs through the policy's Roles)."""
    stack = Stack(BUCKET, account=ACCOUNT, region=REGION)
    if stack.resources[role]["Type"] == "AWS::IAM::ManagedPolicy":
        return template_policy(role)
    documents = [
        stack.policy(name)
        for name, resource in stack.resources.items()
        if resource["Type"] == "AWS::IAM::ManagedPolicy" and {"Ref": role} in resource["Properties"].get("Roles", [])
    ] + [doc for name, doc in stack.documents().items() if name.startswith(f"{role}.") and "Assume" not in name]
    return {"Version": "2012-10-17", "Statement": [st for doc in documents for st in doc["Statement"]]}


@pytest.mark.parametrize(
    "role,call",
    _calls("AirflowPolicy", AIRFLOW)
    + _calls("EmrInstancePolicy", EMR_INSTANCE)
    + _calls("ServerlessJobRole", SERVERLESS_JOB),
)
def test_every_s3_call_path_is_allowed_and_a_missing_key_is_a_404(role, call):
    policy = role_policy(role)
    params = {"Bucket": BUCKET}
    if call.operation == "ListObjectsV2":
        params["Prefix"] = example_key(call.key)
    elif call.key:
        params["Key"] = example_key(call.key)
    for request in iam_requests("s3", call.operation, params, lambda _: {}, REGION, ACCOUNT):
        assert is_allowed(policy, *request), f"{role} denies {call.operation} {params} ({call.by})"
    if call.missing and call.operation in ("GetObject", "HeadObject"):
        assert s3_missing_key_error(policy, BUCKET, call.operation) in ("NoSuchKey", "404"), (
            f"{role}: S3 answers 403, not 404, to {call.operation} of a missing {params['Key']} ({call.by}): "
            "grant s3:ListBucket on the bucket"
        )


def test_s3_answers_403_for_a_missing_key_to_a_caller_who_may_not_list_the_bucket():
    """The rule the test above applies (S3 API Reference, GetObject and HeadObject, "Permissions"),
    and its conservative reading: a ListBucket limited by s3:prefix does not count."""
    get_only = {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}
    by_prefix = {
        "Statement": [
            *get_only["Statement"],
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{BUCKET}",
                "Condition": {"StringLike": {"s3:prefix": ["features/*"]}},
            },
        ]
    }
    whole = {"Statement": [*get_only["Statement"], {**by_prefix["Statement"][1], "Condition": {}}]}
    assert [s3_missing_key_error(p, BUCKET, "HeadObject") for p in (get_only, by_prefix, whole)] == [
        "403",
        "403",
        "404",
    ]
    assert (
        s3_missing_key_error(whole, BUCKET) == "NoSuchKey" and s3_missing_key_error(get_only, BUCKET) == "AccessDenied"
    )


@pytest.mark.parametrize("role", ["AirflowPolicy", "EmrInstancePolicy"])
def test_both_roles_may_list_the_pipeline_bucket_and_no_other(role):
    policy = template_policy(role)
    assert is_allowed(policy, "s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {})  # no s3:prefix condition
    assert not is_allowed(policy, "s3:ListBucket", "arn:aws:s3:::someone-elses", {"s3:prefix": ""})


# Issue 21, points 2 and 3: what the pre-flight reads of a fresh account, read-only.
def test_the_preflight_may_read_the_service_linked_roles_and_the_vpc():
    from fruits.backends.emr.preflight import SERVICE_LINKED_ROLES

    for role in SERVICE_LINKED_ROLES:
        assert allowed("iam", "GetRole", {"RoleName": role.name}), role.name
        assert not allowed("iam", "CreateServiceLinkedRole", {"AWSServiceName": role.service})
    assert allowed("ec2", "DescribeVpcs", {"Filters": [{"Name": "is-default", "Values": ["true"]}]})
    assert allowed("ec2", "DescribeSubnets", {"SubnetIds": ["subnet-1"]})


def test_airflow_may_run_jobs_on_this_account_s_serverless_applications_and_pass_them_only_the_job_role():
    """Backend emr_serverless (issue 30): StartJobRun names the application, Get/CancelJobRun its job run
    (Service Authorization Reference, EMR Serverless: applications/<id>, .../jobruns/<id>); the job
    runtime role is passed to EMR Serverless only, and no other role is."""
    stack = Stack(BUCKET, account=ACCOUNT, region=REGION)
    app = f"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/00fakeapp"
    for action in ("GetApplication", "StartApplication", "StartJobRun"):
        assert is_allowed(POLICY, f"emr-serverless:{action}", app, {})
    for action in ("GetJobRun", "CancelJobRun", "GetDashboardForJobRun"):
        assert is_allowed(POLICY, f"emr-serverless:{action}", f"{app}/jobruns/00fakerun", {})
    assert not is_allowed(POLICY, "emr-serverless:DeleteApplication", app, {})  # the stack owns it
    assert not is_allowed(POLICY, "emr-serverless:StartJobRun", app.replace(ACCOUNT, "999999999999"), {})
    job_role = stack.resolve({"Fn::GetAtt": ["ServerlessJobRole", "Arn"]})
    to_serverless = {"iam:PassedToService": "emr-serverless.amazonaws.com"}
    assert is_allowed(POLICY, "iam:PassRole", job_role, to_serverless)
    assert not is_allowed(POLICY, "iam:PassRole", job_role, {"iam:PassedToService": "ec2.amazonaws.com"})
    instance_role = stack.resolve({"Fn::GetAtt": ["EmrInstanceRole", "Arn"]})
    assert not is_allowed(POLICY, "iam:PassRole", instance_role, to_serverless)
    # the calls as the DAG makes them (iam_eval: StartJobRun implies the PassRole), and the pre-flight's
    start = {"applicationId": "00fakeapp", "executionRoleArn": job_role, "jobDriver": {}, "clientToken": "t"}
    assert allowed("emr-serverless", "StartJobRun", start)
    assert not allowed("emr-serverless", "StartJobRun", {**start, "executionRoleArn": instance_role})
    assert allowed("emr-serverless", "ListJobRuns", {"applicationId": "00fakeapp", "states": ["RUNNING"]})
    assert allowed("emr-serverless", "CancelJobRun", {"applicationId": "00fakeapp", "jobRunId": "00fakerun"})
    assert allowed("iam", "GetRole", {"RoleName": job_role.rsplit("/", 1)[-1]})
    assert allowed("service-quotas", "GetServiceQuota", {"ServiceCode": "emr-serverless", "QuotaCode": "L-D05C8A75"})
    assert not allowed("service-quotas", "RequestServiceQuotaIncrease", {"ServiceCode": "emr-serverless"})


def test_the_serverless_job_role_has_the_cluster_nodes_lake_access_and_trusts_this_account_s_runs_only():
    stack = Stack(BUCKET, account=ACCOUNT, region=REGION)
    resources = stack.resources
    assert {"Ref": "ServerlessJobRole"} in resources["EmrInstancePolicy"]["Properties"]["Roles"]  # one policy
    trust = stack.documents()["ServerlessJobRole.AssumeRolePolicyDocument"]["Statement"]
    assert [st["Principal"] for st in trust] == [{"Service": "emr-serverless.amazonaws.com"}]
    assert [st["Condition"] for st in trust] == [{"StringEquals": {"aws:SourceAccount": ACCOUNT}}]
    logs = stack.documents()["ServerlessJobRole.WriteTheJobsLogs"]
    assert [st["Resource"] for st in logs["Statement"]] == [f"arn:aws:s3:::{BUCKET}/logs/emr-serverless/*"]
