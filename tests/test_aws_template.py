"""infra/aws/fruits.yaml, the AWS side as code: what it creates, what it outputs, and the real
checkers, offline: cfn-lint (no error, no warning), checkov (no failed check; each skip carries its
reason in the template) and parliament (nothing at MEDIUM or above in any IAM policy document).

The checkers live in .venv-iac (`make install`, from requirements-iac.txt: checkov pins versions of
boto3/botocore that would break Airflow and moto in .venv); without it these tests skip and say so.
"""

import json
import os
import subprocess

import pytest

from fruits.config import settings

from cfn_template import REPO, TEMPLATE, Stack, load

IAC_BIN = REPO / ".venv-iac" / "bin"
TOOL_TIMEOUT_S = 300


def tool(name: str) -> str:
    path = IAC_BIN / name
    if not path.exists():
        pytest.skip(f"{path} is missing: run `make install` (creates .venv-iac from requirements-iac.txt)")
    return str(path)


def run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=TOOL_TIMEOUT_S, cwd=REPO, **kwargs
    )


TEMPLATE_DICT = load()
RESOURCES = TEMPLATE_DICT["Resources"]


def test_cfn_lint_reports_nothing():
    result = run([tool("cfn-lint"), "--format", "parseable", str(TEMPLATE.relative_to(REPO))])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_checkov_passes_and_every_skip_says_why():
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    env.pop("BC_API_KEY", None)
    result = run(
        [
            tool("checkov"),
            "-f",
            str(TEMPLATE.relative_to(REPO)),
            "--skip-download",
            "--framework",
            "cloudformation",
            "--output",
            "json",
            "--quiet",
        ],
        env=env,
    )
    report = json.loads(result.stdout)
    failed = report["results"]["failed_checks"] if isinstance(report, dict) and "results" in report else []
    assert result.returncode == 0 and not failed, [(c["check_id"], c["resource"]) for c in failed] or result.stderr
    for name, resource in RESOURCES.items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert skip["id"].startswith("CKV") and len(skip.get("comment", "")) > 40, (name, skip)


def test_parliament_finds_nothing_at_medium_or_above(tmp_path):
    # Trust policies (AssumeRolePolicyDocument) are left out: parliament audits identity and resource
    # policies, and reads a trust policy's lack of Resource (by design) as MALFORMED.
    docs = {
        name: doc
        for name, doc in Stack("fruits-lake-example", account="123456789012").documents().items()
        if not name.endswith("AssumeRolePolicyDocument")
    }
    assert {
        "AirflowPolicy",
        "EmrInstancePolicy",
        "EmrServiceRole.pass-the-project-instance-role",
        "LakeBucketPolicy",
    } <= set(docs)
    for name, doc in docs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc, indent=1))
    result = run(
        [
            tool("parliament"),
            "--directory",
            str(tmp_path),
            "--include_policy_extension",
            ".json",
            "--minimum_severity",
            "MEDIUM",
            "--json",
        ]
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_the_bucket_is_private_encrypted_tls_only_and_cleans_up():
    props = RESOURCES["LakeBucket"]["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert all(props["PublicAccessBlockConfiguration"].values()) and len(props["PublicAccessBlockConfiguration"]) == 4
    rules = {r.get("Prefix"): r for r in props["LifecycleConfiguration"]["Rules"]}
    assert rules["logs/"]["ExpirationInDays"] <= 90 and rules["batch_runs/_staging/"]["ExpirationInDays"] <= 14
    (deny,) = Stack("b").resolve(RESOURCES["LakeBucketPolicy"]["Properties"]["PolicyDocument"])["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_service_role_uses_the_v2_managed_policy_and_may_pass_our_instance_role():
    """Blocker 2: AmazonEMRServicePolicy_v2's own PassRole covers EMR_EC2_DefaultRole only."""
    stack = Stack("b", account="123456789012")
    role = stack.resolve(RESOURCES["EmrServiceRole"]["Properties"])
    assert role["ManagedPolicyArns"] == ["arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"]
    (inline,) = role["Policies"]
    (st,) = inline["PolicyDocument"]["Statement"]
    assert (st["Action"], st["Resource"]) == ("iam:PassRole", "arn:aws:iam::123456789012:role/fruits-emr-ec2-role")
    assert st["Condition"] == {"StringLike": {"iam:PassedToService": "ec2.amazonaws.com*"}}
    profile = stack.resolve(RESOURCES["EmrInstanceProfile"]["Properties"])
    assert profile["InstanceProfileName"] == stack.resolve(RESOURCES["EmrInstanceRole"]["Properties"])["RoleName"]


def test_the_serverless_image_repository_lets_only_emr_serverless_pull_and_only_for_this_account():
    """Issue 30: EMR Serverless pulls a custom image as its service principal (User Guide, "Customizing
    an EMR Serverless image"): the repository policy allows that pull, nothing else, for this account's
    applications of the stack's region; tags never move; the application exists only with an image."""
    stack = Stack("b", account="123456789012", region="eu-west-1")
    repo = RESOURCES["ServerlessImageRepository"]["Properties"]
    assert repo["ImageTagMutability"] == "IMMUTABLE" and repo["ImageScanningConfiguration"] == {"ScanOnPush": True}
    (st,) = stack.resolve(repo["RepositoryPolicyText"])["Statement"]
    assert st["Effect"] == "Allow" and st["Principal"] == {"Service": "emr-serverless.amazonaws.com"}
    assert sorted(st["Action"]) == ["ecr:BatchGetImage", "ecr:DescribeImages", "ecr:GetDownloadUrlForLayer"]
    assert st["Condition"] == {
        "ArnLike": {"aws:SourceArn": "arn:aws:emr-serverless:eu-west-1:123456789012:/applications/*"}
    }
    app = RESOURCES["ServerlessApplication"]
    assert app["Condition"] == "HasServerlessImage" and app["Properties"]["Architecture"] == "X86_64"
    assert app["Properties"]["ReleaseLabel"] == settings.DEFAULTS["release_label"]  # the EMR backend's release
    assert app["Properties"]["AutoStopConfiguration"]["Enabled"] is True


def test_outputs_are_the_settings_the_dag_needs_and_match_their_defaults():
    outputs = TEMPLATE_DICT["Outputs"]
    variables = {o["Description"]: name for name, o in outputs.items() if o["Description"].startswith("fruits_")}
    assert set(variables) == {
        "fruits_bucket",
        "fruits_emr_service_role",
        "fruits_emr_instance_profile",
        "fruits_project_tag",
        "fruits_subnet_id",
        "fruits_security_group_ids",
        "fruits_serverless_application_id",
        "fruits_serverless_job_role_arn",
    }
    assert set(variables) <= {s.variable for s in settings.SETTINGS if not s.env_only}
    assert "AirflowPolicyArn" in outputs
    # Deployed with its defaults, the stack's names are the settings' defaults: nothing else to set.
    stack = Stack("b")
    assert stack.resolve(outputs["FruitsEmrServiceRole"]["Value"]) == settings.DEFAULTS["emr_service_role"]
    assert stack.resolve(outputs["FruitsEmrInstanceProfile"]["Value"]) == settings.DEFAULTS["emr_instance_profile"]
    assert stack.resolve(outputs["FruitsProjectTag"]["Value"]) == settings.DEFAULTS["project_tag"]
    # The application exists once its image does (ServerlessImageTag): so does its output.
    assert outputs["FruitsServerlessApplicationId"]["Condition"] == "HasServerlessImage"


def test_the_lake_s_delta_tables_are_registered_once_for_athena_with_a_read_only_policy():
    """Issue 27: Glue tables with only a location and table_type DELTA (Athena reads the rest from
    the Delta log), at the lake's table folders; an enforced, encrypted workgroup writing into the
    bucket; a reader policy that reads the tables and nothing else of the lake."""
    from fruits_jobs import layout

    from iam_eval import is_allowed

    stack = Stack("fruits-lake-example", account="123456789012")
    tables = {
        stack.resolve(r["Properties"])["TableInput"]["Name"]: stack.resolve(r["Properties"])
        for r in RESOURCES.values()
        if r["Type"] == "AWS::Glue::Table"
    }
    assert set(tables) == {"features", "rejects", "vectors"}
    for name, props in tables.items():
        table = props["TableInput"]
        assert table["Parameters"]["table_type"] == "DELTA" and props["DatabaseName"] == "fruits_lake"
        assert table["StorageDescriptor"] == {"Location": f"s3://fruits-lake-example/{getattr(layout, name.upper())}"}
    workgroup = stack.resolve(RESOURCES["LakeWorkGroup"]["Properties"])["WorkGroupConfiguration"]
    assert workgroup["EnforceWorkGroupConfiguration"] is True
    assert workgroup["ResultConfiguration"]["OutputLocation"] == "s3://fruits-lake-example/athena-results/"
    reader = stack.policy("LakeReaderPolicy")

    def s3(action: str, key: str) -> bool:
        return is_allowed(reader, f"s3:{action}", f"arn:aws:s3:::fruits-lake-example/{key}", {})

    assert s3("GetObject", "features/_delta_log/00000000000000000000.json")
    assert s3("GetObject", "vectors/s1/b1/r1/part-00000.parquet") and s3("GetObject", "rejects/batch_id=b/run=r/x")
    assert s3("PutObject", "athena-results/q.csv")
    assert not s3("GetObject", "raw/batch_id=b1/shard-00000.parquet")  # never the photos
    assert not s3("PutObject", "features/_delta_log/00000000000000000001.json")  # never a commit
    assert not s3("DeleteObject", "vectors/s1/b1/r1/part-00000.parquet")
