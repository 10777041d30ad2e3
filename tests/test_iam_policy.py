"""The IAM policies in infra/iam: valid documents, least privilege, and the evaluator the `aws`
fixture uses (every moto-driven test checks each AWS call it made against the Airflow role's policy)."""
from airflow_fixtures import ACCOUNT, AIRFLOW_POLICY, BUCKET, REGION, REPO

import json

import pytest

from iam_eval import iam_requests, is_allowed, load_policy

POLICY = load_policy(AIRFLOW_POLICY, BUCKET)
TAGS = {"project": "fruits"}


def allowed(service, op, params, tags=TAGS):
    return all(is_allowed(POLICY, *req) for req in iam_requests(service, op, params, lambda _: tags, REGION, ACCOUNT))


def test_documents_are_valid_and_name_no_wildcard_actions():
    for name in ("airflow_role_policy.json", "emr_instance_profile_policy.json"):
        doc = json.loads((REPO / "infra" / "iam" / name).read_text())
        assert doc["Version"] == "2012-10-17"
        for st in doc["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert not [a for a in actions if "*" in a], (name, st["Sid"])
            assert st["Effect"] == "Allow"


def test_the_calls_the_pipeline_makes_are_allowed():
    assert allowed("s3", "ListObjectsV2", {"Bucket": BUCKET, "Prefix": "raw/batch_id=1/"})
    assert allowed("s3", "PutObject", {"Bucket": BUCKET, "Key": "raw/batch_id=1/Banana/1.jpg"})
    assert allowed("s3", "GetObject", {"Bucket": BUCKET, "Key": "features/batch_id=1/_commits/r1.json"})
    assert allowed("s3", "ListObjectsV2", {"Bucket": BUCKET, "Prefix": "features/batch_id=1/_commits/"})
    assert allowed("emr", "CancelSteps", {"ClusterId": "j-1"})
    assert allowed("emr", "RunJobFlow", {"Tags": [{"Key": "project", "Value": "fruits"}],
                                         "ServiceRole": "fruits-emr-service-role", "JobFlowRole": "fruits-emr-ec2-role"})
    assert allowed("emr", "TerminateJobFlows", {"JobFlowIds": ["j-1"]})


@pytest.mark.parametrize("service,op,params,tags", [
    ("s3", "PutObject", {"Bucket": BUCKET, "Key": "features/batch_id=1/x.parquet"}, TAGS),  # the jobs' output
    ("s3", "GetObject", {"Bucket": BUCKET, "Key": "raw/batch_id=1/Banana/1.jpg"}, TAGS),  # never reads photos
    ("s3", "GetObject", {"Bucket": BUCKET, "Key": "features/batch_id=1/run=r1/part-0.parquet"}, TAGS),  # nor features
    ("s3", "ListObjectsV2", {"Bucket": BUCKET, "Prefix": "features/"}, TAGS),
    ("s3", "PutObject", {"Bucket": "someone-elses", "Key": "raw/x.jpg"}, TAGS),
    ("s3", "ListObjectsV2", {"Bucket": BUCKET, "Prefix": ""}, TAGS),  # the whole bucket
    ("s3", "DeleteObject", {"Bucket": BUCKET, "Key": "raw/x.jpg"}, TAGS),
    ("emr", "TerminateJobFlows", {"JobFlowIds": ["j-other"]}, {"project": "other"}),  # not our cluster
    ("emr", "RunJobFlow", {"Tags": [], "ServiceRole": "fruits-emr-service-role",
                           "JobFlowRole": "fruits-emr-ec2-role"}, TAGS),  # untagged cluster
    ("emr", "RunJobFlow", {"Tags": [{"Key": "project", "Value": "fruits"}], "ServiceRole": "AdminRole",
                           "JobFlowRole": "fruits-emr-ec2-role"}, TAGS),  # PassRole on another role
    ("emr", "ListClusters", {"ClusterId": "j-1"}, TAGS),
    ("sts", "GetCallerIdentity", {}, TAGS),
])
def test_everything_else_is_denied(service, op, params, tags):
    assert not allowed(service, op, params, tags)


def test_the_evaluator_refuses_what_it_does_not_model():
    with pytest.raises(KeyError):
        is_allowed({"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
                                   "Condition": {"ArnLike": {"aws:SourceArn": "*"}}}]},
                   "s3:GetObject", "arn:aws:s3:::b/k", {})


INSTANCE_POLICY = load_policy(REPO / "infra" / "iam" / "emr_instance_profile_policy.json", BUCKET)


@pytest.mark.parametrize("operation,key,allowed_", [
    ("GetObject", "manifests/batch_id=1.json", True),  # the features job reads exactly its manifest
    ("GetObject", "raw/batch_id=1/Banana/1.jpg", True),
    ("PutObject", "features/batch_id=1/_commits/r1.json", True),  # the jobs commit their runs
    ("DeleteObject", "features/batch_id=1/run=r0/part-0.parquet", True),  # ... and delete old runs
    ("PutObject", "manifests/batch_id=1.json", False),  # only Airflow writes manifests
    ("DeleteObject", "raw/batch_id=1/Banana/1.jpg", False),  # photos are never deleted
])
def test_the_cluster_reads_and_writes_what_the_jobs_need_and_no_more(operation, key, allowed_):
    (request,) = iam_requests("s3", operation, {"Bucket": BUCKET, "Key": key}, lambda _: {}, REGION, ACCOUNT)
    assert is_allowed(INSTANCE_POLICY, *request) is allowed_
