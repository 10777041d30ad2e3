"""Airflow in isolation for the DAG tests: a throwaway AIRFLOW_HOME with SQLite, this repository's
dags/ and plugins/, no examples. conftest.py loads it as a pytest plugin, before any test module can
import Airflow, because Airflow reads its configuration once, at import; its environment is the test
session's (the process's) for the session's whole life.
"""

import os
import sys
import tempfile
from pathlib import Path

import pytest

from cfn_template import Stack
from iam_eval import S3_ACTIONS, iam_requests, is_allowed, s3_missing_key_error
from s3_call_paths import AIRFLOW

REPO = Path(__file__).resolve().parents[1]


def airflow_home() -> Path:
    """The session's home: a subprocess of the session inherits it; a pytest-xdist worker (which
    inherits the controller's) takes one of its own, since SQLite takes one writer at a time."""
    inherited, worker = os.environ.get("FRUITS_TEST_AIRFLOW_HOME"), os.environ.get("PYTEST_XDIST_WORKER")
    if inherited and (not worker or inherited.endswith(f"-{worker}")):
        return Path(inherited)
    return Path(tempfile.mkdtemp(prefix="fruits-airflow-home-", suffix=f"-{worker}" if worker else ""))


HOME = airflow_home()

if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != str(HOME):
    raise RuntimeError("airflow was imported before tests/airflow_fixtures.py could isolate it")
os.environ.update(
    {
        "FRUITS_TEST_AIRFLOW_HOME": str(HOME),
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{HOME}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)
# Deployment settings of the developer's shell must not leak into the tests.
for _name in [n for n in os.environ if n.startswith(("FRUITS_", "AIRFLOW_VAR_FRUITS_", "AIRFLOW_CONN_"))]:
    if _name not in ("FRUITS_TEST_AIRFLOW_HOME", "FRUITS_SHARED_DIR"):
        del os.environ[_name]


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated metadata DB, once per session (what `airflow db migrate` does, in-process)."""
    from airflow.utils import db

    db.initdb()
    one_execution_api_for_the_session()
    return HOME


def one_execution_api_for_the_session() -> None:
    """Airflow 3.1's dag.test() builds a new in-process Execution API for every task it runs
    (InProcessTestSupervisor._api_client calls supervisor.in_process_api_server): a FastAPI app whose
    versioned routes (cadwyn) take ~0.4 s to generate, and an event-loop thread never stopped. The
    tests share one: the same app on the same database, as a long-lived API server would be."""
    import functools

    from airflow.sdk.execution_time import supervisor

    if not hasattr(supervisor.in_process_api_server, "cache_info"):
        supervisor.in_process_api_server = functools.cache(supervisor.in_process_api_server)


@pytest.fixture(scope="session")
def dagbag():
    from airflow.models.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"), include_examples=False)


@pytest.fixture(scope="session")
def pipeline_dag(dagbag):
    assert not dagbag.import_errors, dagbag.import_errors
    return dagbag.dags["fruits_pipeline"]


@pytest.fixture(scope="session")
def runnable_dag(airflow_db):
    """The DAG as parsed from dags/, with retries off so a failing task fails the test at once
    instead of waiting for its retry_delay; everything else is as deployed."""
    from airflow.models.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags"), include_examples=False).dags["fruits_pipeline"]
    for task in dag.tasks:
        task.retries = 0
    each_run_from_the_dags_own_params(dag)
    return dag


def each_run_from_the_dags_own_params(dag) -> None:
    """Airflow 3.1's Param.resolve keeps a run's conf value in the Param object, which the DAG and its
    tasks share (sdk/definitions/param.py: process_params, ParamsDict.__setitem__), so in one process
    (dag.test) a run's conf became the next run's default: a change_extractor=true leaked into later
    runs. A worker parses the DAG anew; here each dag.test() starts from deep copies of the params."""
    import copy

    dag_params, task_params = copy.deepcopy(dag.params), {t.task_id: copy.deepcopy(t.params) for t in dag.tasks}
    test = dag.test

    def fresh_test(*args, **kwargs):
        dag.params = copy.deepcopy(dag_params)
        for task in dag.tasks:
            task.params = copy.deepcopy(task_params[task.task_id])
        return test(*args, **kwargs)

    dag.test = fresh_test


def make_landing(root: Path, n_good: int = 10, bad: bool = True, seed: int = 0) -> dict:
    """Tiny real JPEGs in the class-folder layout, plus (bad=True) one broken and one non-image file
    for the features job to reject, and OS junk for ingest to skip. Returns the expected counts."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    classes = ["Apple Braeburn", "Banana", "Cherry 1"]
    for i in range(n_good):
        split = "Training" if i % 3 else "Test"
        folder = root / split / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        colour = tuple(rng.randrange(256) for _ in range(3))
        img = Image.new("RGB", (32, 32), colour)
        img.putpixel((i % 32, 0), (255 - colour[0], 0, 0))  # distinct contents, distinct hashes
        img.save(folder / f"{i}_100.jpg", quality=90)
    uploaded = n_good
    if bad:
        banana = root / "Training" / "Banana"
        (banana / "truncated_1.jpg").write_bytes((banana / "1_100.jpg").read_bytes()[:200])
        (banana / "notes.txt").write_text("not a photo\n")
        (banana / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (banana / "._1_100.jpg").write_bytes(b"\0\5\26\7")
        uploaded += 2
    return {"uploaded": uploaded, "skipped": 2 if bad else 0}


# ---- AWS: moto, with every API call our code makes recorded and checked against the IAM policy ----

BUCKET = "fruits-test"
REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account


def template_policy(logical_id: str, bucket: str = BUCKET) -> dict:
    """A policy of infra/aws/fruits.yaml as deployed with BucketName=bucket in this account."""
    return Stack(bucket, account=ACCOUNT, region=REGION).policy(logical_id)


@pytest.fixture
def airflow_policy() -> dict:
    """The policy the `aws` fixture holds the DAG's calls to (a test may parametrize another)."""
    return template_policy("AirflowPolicy")


def deploy_account(region: str = REGION) -> None:
    """What the README's "Going to AWS" makes of an empty account, on moto: the stack's roles and
    profile, the EMR cleanup service-linked role, the default VPC and its default subnets tagged, and
    the weights in the bucket (the bucket itself is the caller's)."""
    import json

    import boto3

    from fruits.backends.emr.builders import EMR_MANAGED_POLICY_TAG
    from fruits.backends.emr.preflight import EMR_CLEANUP_ROLE

    iam = boto3.client("iam", region_name=region)
    trust = json.dumps({"Version": "2012-10-17", "Statement": []})
    for role in ("fruits-emr-service-role", "fruits-emr-ec2-role"):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)
    iam.create_instance_profile(InstanceProfileName="fruits-emr-ec2-role")
    # As `aws iam create-service-linked-role` names it; moto's own create_service_linked_role names
    # it otherwise (AWSServiceRoleForelasticmapreduce), so it is made as a role with AWS's name and path.
    iam.create_role(
        RoleName=EMR_CLEANUP_ROLE.name,
        Path=f"/aws-service-role/{EMR_CLEANUP_ROLE.service}/",
        AssumeRolePolicyDocument=trust,
    )
    ec2 = boto3.client("ec2", region_name=region)
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    ec2.create_tags(Resources=[vpc["VpcId"], *(s["SubnetId"] for s in subnets)], Tags=[EMR_MANAGED_POLICY_TAG])
    boto3.client("s3", region_name=region).put_object(
        Bucket=BUCKET, Key="models/mobilenet_v2_1.0_224_imagenet_no_top.weights.h5", Body=b"weights"
    )


def s3_as_aws_answers(policy: dict, exists) -> list:
    """botocore handlers that give a GetObject/HeadObject of a missing key the error S3 would give the
    holder of policy: 403 without s3:ListBucket on the bucket (moto always answers 404). The request's
    parameters reach before-call through the call's context."""
    from botocore.awsrequest import AWSResponse

    def remember(params, context, **_):
        context["fruits_s3_object"] = (params.get("Bucket"), params.get("Key"))

    def answer(model, context, **_):
        bucket, key = context.get("fruits_s3_object", (None, None))
        if key is None or exists(bucket, key):
            return None
        code = s3_missing_key_error(policy, bucket, model.name)
        if code in ("NoSuchKey", "404"):
            return None  # what moto answers itself
        error = {"Code": code, "Message": "Forbidden" if code == "403" else "Access Denied"}
        response = AWSResponse(f"https://{bucket}.s3.amazonaws.com/{key}", 403, {}, None)
        return response, {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}}

    return [
        ("before-parameter-build.s3.GetObject", remember),
        ("before-parameter-build.s3.HeadObject", remember),
        ("before-call.s3.GetObject", answer),
        ("before-call.s3.HeadObject", answer),
    ]


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 as a server, for delta-rs (which talks to S3 itself, not through boto3): in this
    process, so it shares mock_aws's buckets. Its endpoint, for AWS_ENDPOINT_URL_S3."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(monkeypatch, airflow_policy, moto_server):
    """moto for S3 and EMR, an `aws_default` connection with the region, the account as the README
    deploys it, and a recorder: at the end, every call our code made (and what it implies: PassRole,
    AddTags) must be allowed by the Airflow policy of infra/aws/fruits.yaml, and every S3 call must be
    one that tests/s3_call_paths.py lists. While the test runs, S3 answers a missing key as AWS would
    under that policy (s3_as_aws_answers)."""
    import json
    from fnmatch import fnmatchcase

    import boto3
    import botocore.handlers
    from moto import mock_aws
    from moto.emr.models import emr_backends

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": {"region_name": REGION}}))
    monkeypatch.setenv("FRUITS_BUCKET", BUCKET)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)  # boto3 and delta-rs alike reach the same buckets
    calls = []

    def record(params, model, **_):
        calls.append((model.service_model.service_name, model.name, dict(params)))

    with mock_aws():
        s3 = boto3.session.Session().client("s3", region_name=REGION)  # its own session: neither recorded nor ruled
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        deploy_account()

        def exists(bucket: str, key: str) -> bool:
            found = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
            return bool(found) and found[0]["Key"] == key

        # Registered for clients created from now on (the hooks create theirs inside tasks).
        monkeypatch.setattr(
            botocore.handlers,
            "BUILTIN_HANDLERS",
            botocore.handlers.BUILTIN_HANDLERS
            + [
                ("before-parameter-build", record),
                *s3_as_aws_answers(airflow_policy, exists),
            ],
        )
        yield calls
        backend = emr_backends[ACCOUNT][REGION]
        denied = [
            (req, op)
            for service, op, params in calls
            for req in iam_requests(
                service,
                op,
                params,
                lambda cid: {t["Key"]: t["Value"] for t in backend.clusters[cid].tags},
                REGION,
                ACCOUNT,
            )
            if not is_allowed(airflow_policy, *req)
        ]
        assert not denied, f"calls the Airflow role's policy does not allow: {denied}"

        def listed(op: str, params: dict) -> bool:
            key = params.get("Key", params.get("Prefix", ""))
            action = S3_ACTIONS.get(op, f"s3:{op}")
            return any(
                S3_ACTIONS.get(c.operation, f"s3:{c.operation}") == action and fnmatchcase(key, c.key) for c in AIRFLOW
            )

        unlisted = sorted(
            {(op, p.get("Key", p.get("Prefix", ""))) for svc, op, p in calls if svc == "s3" and not listed(op, p)}
        )
        assert not unlisted, f"S3 calls tests/s3_call_paths.py does not list (add them to AIRFLOW): {unlisted}"


def emr_run_config(batch_id: str = "2025-01-02", **emr):
    """A run on EMR as the first task resolves it (bucket BUCKET), for the pure builders and checks;
    emr: changes to its EMR section (3 m5.2xlarge core nodes, no spot)."""
    from fruits.config.run import EmrConfig, RunConfig

    section = EmrConfig(**{"instance_type": "m5.2xlarge", "core_count": 3, "task_spot_count": 0, **emr})
    return RunConfig(
        batch_id=batch_id,
        landing_dir="/landing",
        backend="emr",
        pca_k=None,
        pca_variance=0.9,
        weights=f"s3://{BUCKET}/models/w.weights.h5",
        bucket=BUCKET,
        root=f"s3://{BUCKET}/",
        emr=section,
    )


def xcom(dag_run, task_id: str, key: str = "return_value"):
    """A task's XCom from the metadata DB, as the UI shows it."""
    from airflow.models.xcom import XComModel
    from airflow.settings import Session

    with Session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key=key)
        ).first()
        return None if row is None else XComModel.deserialize_value(row)
