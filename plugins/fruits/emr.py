"""Pure builders of the EMR job flow and the two Spark steps, from one PipelineConfig.

The steps are the single definition of "how the jobs run": EMR executes them, and the local
backend (local_runner.py) executes the very same argument lists with a local spark-submit.
"""
from typing import List

from fruits import layout
from fruits.config import PipelineConfig

PYTHON = "/usr/bin/python3.11"  # installed by the bootstrap; the jobs' pins are for 3.11
FEATURES_STEP = "extract_features"
PCA_STEP = "reduce_dimensions"

# Sensors: DescribeStep is throttled per account, so poll at most once a minute; timeouts sized for
# a real batch (tens of thousands of photos on a few m5.2xlarge nodes) with a wide margin.
POKE_INTERVAL_S = 60
FEATURES_TIMEOUT_S = 6 * 3600
PCA_TIMEOUT_S = 2 * 3600

# Executor shape for TF inference on m5.2xlarge (8 vCPU, 24 GiB for YARN): two executors per node,
# 2 tasks each with 2 cores per task so TF's intra-op threads have a core to run on; the model
# lives in the Python worker (off-heap), hence a small heap and a large overhead. Arrow batch size
# and Python worker reuse are the job's own settings (extract_features.py --batch-size).
SPARK_CONF = {
    "spark.executor.cores": "4",
    "spark.task.cpus": "2",
    "spark.executor.memory": "4g",
    "spark.executor.memoryOverhead": "6g",
}


def code_uri(cfg: PipelineConfig, version: str, name: str = "") -> str:
    return cfg.uri(layout.code_prefix(version) + name)


def _spark_submit(cfg: PipelineConfig, version: str, entrypoint: str, job_args: List[str]) -> List[str]:
    conf = [item for key, value in SPARK_CONF.items() for item in ("--conf", f"{key}={value}")]
    return ["spark-submit", "--deploy-mode", "cluster", "--master", "yarn",
            "--py-files", code_uri(cfg, version, "fruits_jobs.zip"), *conf,
            code_uri(cfg, version, entrypoint), *job_args]


def features_args(cfg: PipelineConfig, version: str) -> List[str]:
    return _spark_submit(cfg, version, "extract_features.py", [
        "--images", cfg.uri(layout.raw_prefix(cfg.batch_id)),
        "--features", cfg.uri(layout.FEATURES),
        "--rejects", cfg.uri(layout.REJECTS),
        "--batch-id", cfg.batch_id,
        "--weights", cfg.weights,
    ])


def pca_args(cfg: PipelineConfig, version: str) -> List[str]:
    # PCA is fitted on all features so far (the dataset, not one day's photos); each batch run
    # keeps its own model and metrics under pca/batch_id=<id>/.
    size = ["--k", str(cfg.pca_k)] if cfg.pca_k is not None else ["--variance", str(cfg.pca_variance)]
    return _spark_submit(cfg, version, "reduce_dimensions.py", [
        "--features", cfg.uri(layout.FEATURES),
        "--output", cfg.uri(layout.pca_prefix(cfg.batch_id)),
        *size,
    ])


def spark_steps(cfg: PipelineConfig, version: str) -> List[dict]:
    """Both steps, for one AddJobFlowSteps call (adding them one by one could run PCA on old data)."""
    def step(name: str, args: List[str], on_failure: str) -> dict:
        return {"Name": f"{name} {cfg.batch_id}", "ActionOnFailure": on_failure,
                "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}

    return [
        # A failed features step cancels the pending PCA step and leaves the cluster to the
        # teardown task (which also ends a cluster whose steps were cancelled).
        step(FEATURES_STEP, features_args(cfg, version), "CANCEL_AND_WAIT"),
        # CONTINUE: the teardown terminates the cluster seconds after the sensor sees the failure,
        # the IdleTimeout does if Airflow is down; one owner of the cluster's life, not two.
        step(PCA_STEP, pca_args(cfg, version), "CONTINUE"),
    ]


def _tags(cfg: PipelineConfig) -> List[dict]:
    # project=fruits is what the Airflow role's policy requires on every cluster it touches.
    return [{"Key": "project", "Value": "fruits"}, {"Key": "batch_id", "Value": cfg.batch_id},
            {"Key": "managed-by", "Value": "airflow"}]


def instance_groups(cfg: PipelineConfig) -> List[dict]:
    groups = [
        {"Name": "primary", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
         "InstanceType": cfg.primary_instance_type, "InstanceCount": 1},
        {"Name": "core", "InstanceRole": "CORE", "Market": "ON_DEMAND",
         "InstanceType": cfg.instance_type, "InstanceCount": cfg.core_count},
    ]
    if cfg.task_spot_count > 0:
        # Task nodes hold no HDFS data, so losing a spot node only reruns its Spark tasks.
        groups.append({"Name": "task-spot", "InstanceRole": "TASK", "Market": "SPOT",
                       "InstanceType": cfg.instance_type, "InstanceCount": cfg.task_spot_count})
    return groups


def configurations() -> List[dict]:
    """The jobs need Python 3.11 (their pins); EMR 7's default python3 is 3.9."""
    return [
        {"Classification": "spark-env", "Properties": {}, "Configurations": [
            {"Classification": "export", "Properties": {"PYSPARK_PYTHON": PYTHON}}]},
        {"Classification": "spark-defaults", "Properties": {
            "spark.pyspark.python": PYTHON,
            "spark.pyspark.driver.python": PYTHON,
            "spark.executorEnv.PYSPARK_PYTHON": PYTHON,
            "spark.yarn.appMasterEnv.PYSPARK_PYTHON": PYTHON,
        }},
    ]


def job_flow_overrides(cfg: PipelineConfig, version: str) -> dict:
    """RunJobFlow request for a transient cluster; the steps are added after it is created."""
    instances = {
        "InstanceGroups": instance_groups(cfg),
        "KeepJobFlowAliveWhenNoSteps": True,  # steps come from a separate call
        "TerminationProtected": False,  # the teardown must be able to end it
    }
    if cfg.subnet_id:
        instances["Ec2SubnetId"] = cfg.subnet_id
    flow = {
        "Name": f"fruits-{cfg.batch_id}",
        "ReleaseLabel": cfg.release_label,
        "Applications": [{"Name": "Spark"}],  # TensorFlow comes from the bootstrap, pinned with the jobs
        "LogUri": cfg.uri(layout.EMR_LOGS),
        "Instances": instances,
        "BootstrapActions": [{
            "Name": "python3.11 and the jobs' requirements",
            "ScriptBootstrapAction": {"Path": code_uri(cfg, version, "bootstrap/emr_bootstrap.sh"),
                                      "Args": [code_uri(cfg, version, "requirements.txt")]},
        }],
        "Configurations": configurations(),
        # Safety net: a cluster idle this long ends itself even if Airflow never runs the teardown.
        "AutoTerminationPolicy": {"IdleTimeout": cfg.idle_timeout_s},
        "Tags": _tags(cfg),
        "VisibleToAllUsers": True,
        "JobFlowRole": cfg.emr_instance_profile,
        "ServiceRole": cfg.emr_service_role,
    }
    if cfg.security_configuration:
        flow["SecurityConfiguration"] = cfg.security_configuration
    return flow
