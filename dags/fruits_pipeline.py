"""# Fruits! — new photos to features and PCA

Daily (or triggered with the form's parameters), on EMR or on this machine:

1. **validate_params**: a bad parameter or weights file fails here, before anything is uploaded.
2. **ingest_new_photos**: the landing folder's photos that no published batch holds go to `raw/`,
   with the batch's manifest; **any_new_photos** stops the run here, visibly, when none is new.
3. **stage_code** (the jobs' bundle, by content) → **plan_jobs** (the run's two Spark jobs, once).
4. **choose_backend**, then either
   - **emr**: `preflight` (bucket, weights, roles, subnet, instance types, code: nothing is created
     when one is wrong) → `create_cluster` → `add_steps` (both jobs in one call; a retry of either
     reuses what its first try made) → one `watch_<job>` sensor per job, which logs the job's
     progress and, on failure, why → `terminate_cluster`, the teardown that always ends the cluster;
   - **local**: `run_locally`, the same jobs with a local `spark-submit`, a folder as the bucket.
5. **publish_summary**: counts, k, explained variance, where every output is, and the run report
   (wall times, images/s, on EMR the cluster and its cost); the outputs are published as the
   assets `fruits://features` and `fruits://pca`.

Logic lives in the `fruits` package (`plugins/fruits`); this file only tells the story.
"""
from datetime import timedelta

import pendulum
from airflow.providers.amazon.aws.operators.emr import EmrTerminateJobFlowOperator
from airflow.sdk import Asset, TaskGroup, TriggerRule, chain, dag, task

from fruits.backends.emr import builders as emr
from fruits.backends import jobs
from fruits import pipeline
from fruits.lake import summary
from fruits.config.run import emr_deferrable
from fruits.config.params import build_params
from fruits.backends.emr.operators import CreateClusterOnce, StepSensor
from fruits.config.settings import AWS_CONN_ID

DEFERRABLE = emr_deferrable()
OUTPUTS = [Asset(name="fruits_features", uri=summary.FEATURES_ASSET_URI),
           Asset(name="fruits_pca", uri=summary.PCA_ASSET_URI)]


def watch(job: jobs.JobDef, cluster_id, step_id, progress_uris) -> StepSensor:
    return StepSensor(
        task_id=f"watch_{job.name}",
        job_name=job.name,
        progress_uris=progress_uris,  # its log shows the job's progress on each poke
        job_flow_id=cluster_id,
        step_id=step_id,
        poke_interval=emr.POKE_INTERVAL_S,
        timeout=job.timeout_s,
        max_attempts=job.timeout_s // emr.POKE_INTERVAL_S,  # the deferrable trigger's timeout
        mode="reschedule",  # between pokes the worker slot is free
        deferrable=DEFERRABLE,
        retries=0,  # a FAILED step stays failed; throttling is retried inside botocore
    )


@dag(
    dag_id="fruits_pipeline",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # two runs would share the lake's features/ and race on PCA
    params=build_params(),
    # Region and credentials live in the connection, never here.
    default_args={"owner": "data-platform", "retries": 1, "retry_delay": timedelta(minutes=2),
                  "aws_conn_id": AWS_CONN_ID},
    description="New fruit photos to MobileNetV2 features and PCA, on EMR or locally",
    doc_md=__doc__,
    tags=["fruits", "emr", "spark"],
)
def fruits_pipeline():
    @task(retries=0)  # a bad parameter will not get better
    def validate_params(**context) -> dict:
        return pipeline.validate_params(context)

    @task
    def ingest_new_photos(cfg: dict) -> dict:
        return pipeline.ingest_batch(cfg)

    @task.short_circuit
    def any_new_photos(cfg: dict, report: dict) -> bool:
        return pipeline.has_work(cfg, report)

    @task
    def stage_code(cfg: dict) -> str:
        return pipeline.stage_code(cfg)

    @task(multiple_outputs=True)
    def plan_jobs(cfg: dict, version: str, **context) -> dict:
        return pipeline.plan(cfg, version, context["run_id"])

    @task.branch
    def choose_backend(cfg: dict, first_task: dict) -> str:
        return first_task[cfg["backend"]]

    @task(retries=0)  # a setting to change will not change by itself
    def preflight(cfg: dict, version: str) -> None:
        pipeline.preflight(cfg, version)

    @task(multiple_outputs=True)  # a retry adds only the steps the cluster lacks
    def add_steps(cfg: dict, cluster_id: str, steps: list) -> dict:
        return pipeline.add_steps(cfg, cluster_id, steps)

    @task(retries=0)  # re-running Spark is a person's decision
    def run_locally(cfg: dict, spark_jobs: list) -> list:
        return pipeline.run_locally(cfg, spark_jobs)

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, outlets=OUTPUTS)  # after whichever backend ran
    def publish_summary(cfg: dict, run_by: dict, **context) -> dict:
        # Only the backend that ran has a value to pull (the cluster id, or run_locally's timings).
        # Pulled, not passed: a task fed by the setup create_cluster would need every upstream to succeed.
        result = pipeline.publish_summary(cfg, context["ti"].xcom_pull(task_ids=run_by[cfg["backend"]]))
        for asset in OUTPUTS:  # each asset event says which batch, what it holds and where
            context["outlet_events"][asset].extra = summary.asset_extras(result)[asset.uri]
        return result

    cfg = validate_params()
    report = ingest_new_photos(cfg)
    version = stage_code(cfg)
    plan = plan_jobs(cfg, version)

    with TaskGroup("emr", tooltip="does nothing (skipped) when backend=local"):
        checked = preflight(cfg, version)
        create_cluster = CreateClusterOnce(  # a retry reuses the cluster an earlier try created
            task_id="create_cluster",
            job_flow_overrides=plan["job_flow"],
            emr_conn_id=None,  # the whole request is built in plugins/fruits/backends/emr/builders.py
        )
        step_ids = add_steps(cfg, create_cluster.output, plan["steps"])
        watchers = [watch(job, create_cluster.output, step_ids[job.name], plan["progress"]) for job in jobs.JOBS]
        # Setups: the cluster and its steps. Clearing any task in between clears them too, so it
        # reruns on a fresh cluster with fresh steps, and the teardown ends that cluster again.
        terminate_cluster = EmrTerminateJobFlowOperator(
            task_id="terminate_cluster", job_flow_id=create_cluster.output,
        ).as_teardown(setups=[create_cluster, step_ids.operator])
        chain(checked, create_cluster, step_ids, *watchers, terminate_cluster)

    local = run_locally(cfg, plan["jobs"])
    backend = choose_backend(cfg, {"emr": checked.operator.task_id, "local": local.operator.task_id})
    chain(report, any_new_photos(cfg, report), version, plan, backend, [checked, local])
    # After the teardown too: the run report's cost counts the cluster's whole life.
    chain([watchers[-1], terminate_cluster, local], publish_summary(cfg, {"emr": create_cluster.task_id, "local": local.operator.task_id}))


fruits_pipeline()
