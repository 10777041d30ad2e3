"""The "Going to AWS" commands (docs/aws.md), read as a new user runs them on an empty account (issue 21):
one region, the service-linked roles and tags the pre-flight asks for, the weights in the bucket, a
landing folder, the emr backend for every run, and the DAG unpaused before it can run at all."""

import re

from fruits.backends.emr.builders import EMR_MANAGED_POLICY_TAG
from fruits.backends.emr.preflight import SERVICE_LINKED_ROLES
from fruits.config.settings import SETTINGS
from fruits_jobs.layout import DEFAULT_WEIGHTS_FILE, MODELS

from cfn_template import REPO

SECTION = (REPO / "docs" / "aws.md").read_text()  # moved from the README (issue 31)
(COMMANDS,) = re.findall(r"```bash\n(.*?)```", SECTION, flags=re.S)[:1]
LINES = [line.split("#", 1)[0].strip() for line in COMMANDS.splitlines()]  # the commands, comments dropped


def line_of(text: str) -> int:
    """The index of the first command line that holds text (ValueError names it when none does)."""
    for i, line in enumerate(LINES):
        if text in line:
            return i
    raise ValueError(f"no command of the README's 'Going to AWS' holds {text!r}")


def test_the_dag_is_unpaused_after_the_backend_is_set_and_before_it_is_triggered():
    """Point 5: Airflow creates DAGs paused, and a trigger does not unpause one."""
    from airflow.configuration import conf

    assert conf.getboolean("core", "dags_are_paused_at_creation")  # Airflow's default: paused
    (backend,) = [s for s in SETTINGS if s.name == "backend"]
    assert backend.env_only  # so the environment sets it, not a Variable
    assert line_of(f"{backend.env}=emr") < line_of("airflow dags unpause fruits_pipeline")
    assert line_of("airflow dags unpause fruits_pipeline") < line_of("airflow dags trigger fruits_pipeline")
    assert '"backend"' not in COMMANDS  # not one triggered run's conf: every run, the @daily ones too


def test_one_region_throughout():
    """The CLI's region (the stack's, which the service role's trust pins) is the connection's."""
    regions = re.findall(r"\b[a-z]{2}-[a-z]+-\d\b", COMMANDS)
    assert len(regions) == 1 and line_of(f"AWS_DEFAULT_REGION={regions[0]}") == 0, regions
    assert '\\"region_name\\": \\"$AWS_DEFAULT_REGION\\"' in COMMANDS
    assert "--region" not in COMMANDS  # no command of its own region


def test_it_creates_what_the_preflight_asks_of_a_fresh_account():
    """Points 2 and 3: the commands the pre-flight names for its gaps, in the README's order of things."""
    for role in SERVICE_LINKED_ROLES:
        line_of(f"aws iam create-service-linked-role --aws-service-name {role.service}")
    tag = f"--tags Key={EMR_MANAGED_POLICY_TAG['Key']},Value={EMR_MANAGED_POLICY_TAG['Value']}"
    (create_tags,) = [line for line in LINES if line.startswith("aws ec2 create-tags")]
    assert '"$VPC"' in create_tags and "$SUBNETS" in create_tags and create_tags.endswith(tag)
    assert line_of("Name=is-default,Values=true") < line_of("aws ec2 create-tags")  # the default VPC ...
    assert line_of("Name=default-for-az,Values=true") < line_of("aws ec2 create-tags")  # ... and its subnets
    assert line_of("aws ec2 create-tags") < line_of("airflow dags trigger")


def test_the_weights_and_the_landing_folder_are_where_the_run_reads_them():
    line_of(f'"s3://$BUCKET/{MODELS}"')  # the EMR default: s3://<bucket>/models/<DEFAULT_WEIGHTS_FILE>
    line_of(DEFAULT_WEIGHTS_FILE)
    landing = LINES[line_of("airflow variables set fruits_landing_dir")]
    folder = landing.split("fruits_landing_dir", 1)[1].split()[0]
    assert f"mkdir -p {folder}" in landing  # it exists on the machine the tasks run on
    variables = {s.variable for s in SETTINGS if not s.env_only}
    assert {v for v in re.findall(r"variables set (fruits_\w+)", COMMANDS)} <= variables
