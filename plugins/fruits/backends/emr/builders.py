"""Pure builders of the EMR job flow and its steps, from one RunConfig and the run's SparkJobs.

The steps are one rendering of the backend-neutral job specs (fruits/jobs.py): EMR runs them with
spark-submit in cluster mode on YARN, with the executor shape below.
"""

import re

from fruits.backends.jobs import SparkJob, submit_args
from fruits.config.run import RunConfig, emr_of
from fruits_jobs import layout
from fruits_jobs.bundle import BOOTSTRAP, LOCK

PYTHON = "/usr/bin/python3.11"  # installed by the bootstrap; the jobs' pins are for 3.11

# Sensors: DescribeStep is throttled per account, so poll at most once a minute.
POKE_INTERVAL_S = 60

# Executor shape for CPU inference on m5.2xlarge (8 vCPU, 24 GiB for YARN): two executors per node,
# 2 tasks each with 2 cores per task so the engine's intra-op threads have a core to run on; the model
# lives in the Python worker (off-heap), hence a small heap and a large overhead (sized when workers
# ran TensorFlow; ONNX Runtime workers need less, kept as headroom for --engine tensorflow). Arrow
# batch size and Python worker reuse are the job's own settings (extract_features.py --batch-size).
# In cluster mode the driver is a YARN container too: its heap stays small (the PCA streams, d x d on
# the driver), and its overhead holds the driver's Python, which loads TensorFlow to export the model.
CLUSTER_CONF = {
    "spark.executor.cores": "4",
    "spark.task.cpus": "2",
    "spark.executor.memory": "4g",
    "spark.executor.memoryOverhead": "6g",
    "spark.driver.memory": "2g",
    "spark.driver.memoryOverhead": "3g",
}


def code_uri(cfg: RunConfig, version: str, name: str = "") -> str:
    return cfg.uri(layout.code_prefix(version) + name)


def step_name(job_name: str, batch_id: str) -> str:
    """A step's name: what a retry (fruits/clusters.py) and the run report find it by."""
    return f"{job_name} {batch_id}"


def spark_step(job: SparkJob, batch_id: str) -> dict:
    conf = [item for key, value in CLUSTER_CONF.items() for item in ("--conf", f"{key}={value}")]
    args = ["spark-submit", "--deploy-mode", "cluster", "--master", "yarn", *conf, *submit_args(job)]
    # A failed step cancels the steps after it (they would read its missing output) and leaves the
    # cluster to the teardown task, the one owner of the cluster's life (the IdleTimeout if Airflow
    # is gone).
    return {
        "Name": step_name(job.name, batch_id),
        "ActionOnFailure": "CANCEL_AND_WAIT",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args},
    }


def spark_steps(jobs: list[SparkJob], batch_id: str) -> list[dict]:
    """Every step, for one AddJobFlowSteps call (adding them one by one could run PCA on old data)."""
    return [spark_step(job, batch_id) for job in jobs]


# AmazonEMRServicePolicy_v2 (the service role's managed policy, infra/aws/fruits.yaml) only acts on
# resources tagged so; EMR propagates the cluster's tags to the instances, volumes and ENIs it creates
# (EMR Management Guide, "Amazon EMR managed policies": emr-managed-iam-policies.html; the policy's text:
# its CreateEMRTaggedInstancesAndVolumes and ManageEMRTaggedResources statements).
EMR_MANAGED_POLICY_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}


# EMR tag values: letters, digits, spaces and _ . : / = + - @, at most 256 characters (EMR Management
# Guide, emr-plan-tags-restrictions.html); an Airflow run id may also hold '~'.
_NOT_IN_TAG = re.compile(r"[^\w .:/=+\-@]")


def tag_value(text: str) -> str:
    return _NOT_IN_TAG.sub("_", text)[:256]


RUN_TAG_KEYS = ("project", "dag_run_id", "batch_id")


def run_tags(cfg: RunConfig, run_id: str) -> dict[str, str]:
    """The tags that tell this run's cluster from any other: a retried create_cluster looks for them.
    project=<project_tag> is also what the Airflow role's policy requires on every cluster it touches."""
    emr = emr_of(cfg)
    return dict(zip(RUN_TAG_KEYS, (emr.project_tag, tag_value(run_id), cfg.batch_id), strict=True))


def _tags(cfg: RunConfig, run_id: str) -> list[dict]:
    return [
        *({"Key": k, "Value": v} for k, v in run_tags(cfg, run_id).items()),
        EMR_MANAGED_POLICY_TAG,
        {"Key": "managed-by", "Value": "airflow"},
    ]


def instance_groups(cfg: RunConfig) -> list[dict]:
    emr = emr_of(cfg)
    groups = [
        {
            "Name": "primary",
            "InstanceRole": "MASTER",
            "Market": "ON_DEMAND",
            "InstanceType": emr.primary_instance_type,
            "InstanceCount": 1,
        },
        {
            "Name": "core",
            "InstanceRole": "CORE",
            "Market": "ON_DEMAND",
            "InstanceType": emr.instance_type,
            "InstanceCount": emr.core_count,
        },
    ]
    if emr.task_spot_count > 0:
        # Task nodes hold no HDFS data, so losing a spot node only reruns its Spark tasks.
        groups.append(
            {
                "Name": "task-spot",
                "InstanceRole": "TASK",
                "Market": "SPOT",
                "InstanceType": emr.instance_type,
                "InstanceCount": emr.task_spot_count,
            }
        )
    return groups


def configurations() -> list[dict]:
    """The jobs need Python 3.11 (their pins); EMR 7's default python3 is 3.9."""
    return [
        {
            "Classification": "spark-env",
            "Properties": {},
            "Configurations": [{"Classification": "export", "Properties": {"PYSPARK_PYTHON": PYTHON}}],
        },
        {
            "Classification": "spark-defaults",
            "Properties": {
                "spark.pyspark.python": PYTHON,
                "spark.pyspark.driver.python": PYTHON,
                "spark.executorEnv.PYSPARK_PYTHON": PYTHON,
                "spark.yarn.appMasterEnv.PYSPARK_PYTHON": PYTHON,
            },
        },
    ]


def job_flow_overrides(cfg: RunConfig, version: str, run_id: str, wheels_uri: str | None = None) -> dict:
    """RunJobFlow request for a transient cluster of the DAG run run_id; the steps are added after it
    is created. wheels_uri: the staged wheelhouse the bootstrap installs from (None: from PyPI)."""
    emr = emr_of(cfg)
    instances = {
        "InstanceGroups": instance_groups(cfg),
        "KeepJobFlowAliveWhenNoSteps": True,  # steps come from a separate call
        "TerminationProtected": False,  # the teardown must be able to end it
    }
    if emr.subnet_id:
        instances["Ec2SubnetId"] = emr.subnet_id
    if emr.security_group_ids:
        groups = [g.strip() for g in emr.security_group_ids.split(",") if g.strip()]
        instances["AdditionalMasterSecurityGroups"] = groups
        instances["AdditionalSlaveSecurityGroups"] = groups
    flow = {
        "Name": f"fruits-{cfg.batch_id}",
        "ReleaseLabel": emr.release_label,
        "Applications": [{"Name": "Spark"}],  # TensorFlow comes from the bootstrap, pinned with the jobs
        "LogUri": cfg.uri(layout.EMR_LOGS),
        "Instances": instances,
        "BootstrapActions": [
            {
                "Name": "python3.11 and the jobs' requirements",
                "ScriptBootstrapAction": {
                    "Path": code_uri(cfg, version, BOOTSTRAP),
                    "Args": [code_uri(cfg, version, LOCK), *([wheels_uri] if wheels_uri else [])],
                },
            }
        ],
        "Configurations": configurations(),
        # Safety net: a cluster idle this long ends itself even if Airflow never runs the teardown.
        "AutoTerminationPolicy": {"IdleTimeout": emr.idle_timeout_s},
        "Tags": _tags(cfg, run_id),
        "VisibleToAllUsers": True,
        "JobFlowRole": emr.instance_profile,
        "ServiceRole": emr.service_role,
    }
    if emr.security_configuration:
        flow["SecurityConfiguration"] = emr.security_configuration
    return flow
