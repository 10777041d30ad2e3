"""The pure EMR builders: the job flow and steps pass botocore's request validation and moto."""

import dataclasses

import boto3
from botocore.session import get_session
from botocore.validate import ParamValidator

from fruits.backends import jobs
from fruits.backends.emr import builders as emr

from airflow_fixtures import REGION, emr_run_config

CFG = emr_run_config()


def with_emr(cfg=CFG, **changes):
    return dataclasses.replace(cfg, emr=dataclasses.replace(cfg.emr, **changes))


VERSION = "abc123def456"
RUN_ID = "manual__2026-12-01T10:00:00.123456+00:00"


def emr_steps(cfg=CFG):
    return emr.spark_steps(jobs.plan_jobs(cfg, VERSION), cfg.batch_id)


def validate(operation: str, params: dict) -> None:
    model = get_session().get_service_model("emr").operation_model(operation)
    report = ParamValidator().validate(params, model.input_shape)
    assert not report.has_errors(), report.generate_report()


def test_job_flow_and_steps_pass_botocore_validation():
    validate(
        "RunJobFlow",
        emr.job_flow_overrides(
            with_emr(
                CFG,
                task_spot_count=2,
                subnet_id="subnet-123",
                security_configuration="fruits-sec",
                security_group_ids="sg-1,sg-2",
            ),
            VERSION,
            RUN_ID,
        ),
    )
    validate("AddJobFlowSteps", {"JobFlowId": "j-1", "Steps": emr_steps()})


def test_job_flow_contents():
    flow = emr.job_flow_overrides(CFG, VERSION, RUN_ID)
    code = f"s3://fruits-test/code/{VERSION}/"
    assert flow["ReleaseLabel"].startswith("emr-7.")
    assert flow["Applications"] == [{"Name": "Spark"}]
    assert flow["LogUri"] == "s3://fruits-test/logs/emr/"
    assert flow["AutoTerminationPolicy"]["IdleTimeout"] == 3600
    assert flow["VisibleToAllUsers"] is True
    assert (flow["ServiceRole"], flow["JobFlowRole"]) == ("fruits-emr-service-role", "fruits-emr-ec2-role")
    assert flow["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert "Ec2KeyName" not in flow["Instances"] and "Ec2SubnetId" not in flow["Instances"]
    assert "SecurityConfiguration" not in flow
    assert [g["InstanceRole"] for g in flow["Instances"]["InstanceGroups"]] == ["MASTER", "CORE"]
    assert flow["Instances"]["InstanceGroups"][1]["InstanceCount"] == 3
    (bootstrap,) = flow["BootstrapActions"]
    assert bootstrap["ScriptBootstrapAction"] == {
        "Path": code + "bootstrap/emr_bootstrap.sh",
        "Args": [code + "requirements.lock"],
    }  # from PyPI
    with_wheels = emr.job_flow_overrides(CFG, VERSION, RUN_ID, "s3://fruits-test/wheels/abc/")["BootstrapActions"][0]
    assert with_wheels["ScriptBootstrapAction"]["Args"] == [code + "requirements.lock", "s3://fruits-test/wheels/abc/"]
    (spark_env, defaults) = flow["Configurations"]
    assert spark_env["Configurations"][0] == {
        "Classification": "export",
        "Properties": {"PYSPARK_PYTHON": "/usr/bin/python3.11"},
    }
    assert defaults["Properties"]["spark.pyspark.python"] == "/usr/bin/python3.11"
    assert {"Key": "project", "Value": "fruits"} in flow["Tags"]
    # what a retried create_cluster finds its run's cluster by
    assert {"Key": "dag_run_id", "Value": RUN_ID} in flow["Tags"] and {
        "Key": "batch_id",
        "Value": "2025-01-02",
    } in flow["Tags"]
    # Blocker 2: AmazonEMRServicePolicy_v2 only acts on resources with this tag (EMR propagates it)
    assert {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"} in flow["Tags"]
    assert "AdditionalMasterSecurityGroups" not in flow["Instances"]


def test_tag_values_are_ones_emr_accepts():
    # Airflow run ids may hold '~' (RUN_ID_REGEX); EMR tag values may not (emr-plan-tags-restrictions).
    assert emr.tag_value("manual__2026-12-01T10:00:00+00:00") == "manual__2026-12-01T10:00:00+00:00"
    assert emr.tag_value("my~run é") == "my_run é"
    assert len(emr.tag_value("x" * 300)) == 256


def test_project_tag_and_security_groups_come_from_the_settings():
    flow = emr.job_flow_overrides(with_emr(project_tag="lab", security_group_ids="sg-1, sg-2"), VERSION, RUN_ID)
    assert {"Key": "project", "Value": "lab"} in flow["Tags"]
    assert flow["Instances"]["AdditionalMasterSecurityGroups"] == ["sg-1", "sg-2"]
    assert flow["Instances"]["AdditionalSlaveSecurityGroups"] == ["sg-1", "sg-2"]


def test_spot_task_group_only_when_asked():
    groups = emr.instance_groups(with_emr(task_spot_count=4))
    assert groups[-1] == {
        "Name": "task-spot",
        "InstanceRole": "TASK",
        "Market": "SPOT",
        "InstanceType": "m5.2xlarge",
        "InstanceCount": 4,
    }


def test_steps_follow_the_jobs_contract():
    features, pca = emr_steps()
    # a failed step cancels the ones after it; the teardown task ends the cluster
    assert (features["ActionOnFailure"], pca["ActionOnFailure"]) == ("CANCEL_AND_WAIT", "CANCEL_AND_WAIT")
    code = f"s3://fruits-test/code/{VERSION}/"
    for step in (features, pca):
        args = step["HadoopJarStep"]["Args"]
        assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
        assert args[:5] == ["spark-submit", "--deploy-mode", "cluster", "--master", "yarn"]
        assert args[args.index("--py-files") + 1] == code + "fruits_jobs.zip"
        assert "spark.task.cpus=2" in args  # TF threads follow the task's cores (the job reads them)
        # the driver is a YARN container in cluster mode: its Python (TensorFlow) needs the overhead
        assert "spark.driver.memory=2g" in args and "spark.driver.memoryOverhead=3g" in args
    f_args = features["HadoopJarStep"]["Args"]
    job = f_args[f_args.index(code + "extract_features.py") + 1 :]
    assert job == [
        "--images",
        "s3://fruits-test/raw/batch_id=2025-01-02/",
        "--features",
        "s3://fruits-test/features/",
        "--rejects",
        "s3://fruits-test/rejects/",
        "--batch-id",
        "2025-01-02",
        "--weights",
        "s3://fruits-test/models/w.weights.h5",
        "--precision",
        "fp32",
        "--model-cache",
        "s3://fruits-test/models/",
        "--manifest",
        "s3://fruits-test/manifests/batch_id=2025-01-02.json",
        "--lease",
        "s3://fruits-test/manifests/batch_id=2025-01-02.lease",
        "--retention-hours",
        "168",
    ]
    p_args = pca["HadoopJarStep"]["Args"]
    job = p_args[p_args.index(code + "reduce_dimensions.py") + 1 :]
    # the lake's one embedding space under pca/ (issue 20): no batch in the PCA's arguments
    assert job == [
        "--features",
        "s3://fruits-test/features/",
        "--output",
        "s3://fruits-test/pca/",
        "--variance",
        "0.9",
        "--refit",
        "auto",
        "--retention-hours",
        "168",
    ]
    with_k = emr_steps(dataclasses.replace(CFG, pca_k=12, pca_refit="never"))[1]["HadoopJarStep"]["Args"]
    assert with_k[-6:-2] == ["--k", "12", "--refit", "never"] and "--variance" not in with_k


def test_a_run_without_photos_has_the_pca_step_alone():
    """No new photos but the space is behind (or a refit is asked): no features step to wait for."""
    (pca,) = emr.spark_steps(jobs.plan_jobs(CFG, VERSION, with_photos=False), CFG.batch_id)
    assert pca["Name"] == "reduce_dimensions 2025-01-02"
    assert "extract_features.py" not in " ".join(pca["HadoopJarStep"]["Args"])
    assert pca == emr_steps()[1]  # the same step as in a run with photos
    validate("AddJobFlowSteps", {"JobFlowId": "j-1", "Steps": [pca]})


def test_moto_accepts_the_job_flow_and_the_steps(aws):
    client = boto3.client("emr", region_name=REGION)
    cluster_id = client.run_job_flow(**emr.job_flow_overrides(with_emr(task_spot_count=1), VERSION, RUN_ID))[
        "JobFlowId"
    ]
    client.add_job_flow_steps(JobFlowId=cluster_id, Steps=emr_steps())
    cluster = client.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["ReleaseLabel"] == CFG.emr.release_label
    assert cluster["AutoTerminate"] is False and cluster["VisibleToAllUsers"] is True
    steps = client.list_steps(ClusterId=cluster_id)["Steps"]
    assert sorted(s["Name"] for s in steps) == ["extract_features 2025-01-02", "reduce_dimensions 2025-01-02"]
    groups = client.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]
    assert sorted(g["InstanceGroupType"] for g in groups) == ["CORE", "MASTER", "TASK"]
    client.terminate_job_flows(JobFlowIds=[cluster_id])
