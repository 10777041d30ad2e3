"""# Fruits! — new photos to features and PCA

Daily (or triggered with the form's parameters), on EMR or on this machine:

1. **validate_params**: a bad parameter or weights file fails here, before anything is uploaded.
2. **ingest_new_photos**: the landing folder's photos that no published batch holds go to `raw/`,
   with the batch's manifest; **any_new_photos** stops the run here, visibly, when none is new and
   the embedding space is up to date (else only the PCA step runs).
3. **stage_code** (the jobs' bundle, by content) → **plan_jobs** (the run's two Spark jobs, once).
4. **choose_backend**: the branch of the run's backend (fruits/backends/), either
   - **emr**: `preflight` (bucket, weights, roles, subnet, instance types, code: nothing is created
     when one is wrong) → `create_cluster` → `add_steps` (both jobs in one call; a retry of either
     reuses what its first try made) → one `watch_<job>` sensor per job, which logs the job's
     progress and, on failure, why → `terminate_cluster`, the teardown that always ends the cluster;
   - **local**: `run_locally`, the same jobs with a local `spark-submit`, a folder as the bucket.
5. **publish_summary**: counts, the embedding space (new or not), where every output is, and the
   run report (wall times, images/s, on EMR the cluster and its cost); the new vectors' index
   pieces; the outputs are published as the assets `fruits://lake/features` and `fruits://lake/pca`.

Logic lives in the `fruits` package (`plugins/fruits`); this file only tells the story. Each backend
adds its own branch of tasks (`Backend.add_tasks`), so nothing here asks which backend runs.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, TriggerRule, chain, dag, task

from fruits import pipeline
from fruits.backends import BACKENDS, backend_named
from fruits.config.params import build_params
from fruits.config.settings import AWS_CONN_ID
from fruits.lake import summary

OUTPUTS = [
    Asset(name="fruits_features", uri=summary.FEATURES_ASSET_URI),
    Asset(name="fruits_pca", uri=summary.PCA_ASSET_URI),
]


@dag(
    dag_id="fruits_pipeline",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # two runs would share the lake's features/ and race on PCA
    params=build_params(),
    # Region and credentials live in the connection, never here.
    default_args={
        "owner": "data-platform",
        "retries": 1,
        "retry_delay": timedelta(minutes=2),
        "aws_conn_id": AWS_CONN_ID,
    },
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
    def plan_jobs(cfg: dict, version: str, report: dict, **context) -> dict:
        return pipeline.plan(cfg, version, context["run_id"], report)

    @task.branch
    def choose_backend(cfg: dict, entries: dict) -> str:
        return entries[cfg["backend"]]

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, outlets=OUTPUTS)  # after whichever backend ran
    def publish_summary(cfg: dict, report: dict, results: dict, **context) -> dict:
        # Only the backend that ran has a value to pull (on EMR the cluster id, locally the timings).
        # Pulled, not passed: a task fed by the setup create_cluster would need every upstream to succeed.
        result = pipeline.publish_summary(cfg, report, context["ti"].xcom_pull(task_ids=results[cfg["backend"]]))
        for asset in OUTPUTS:  # each asset event says which batch, what it holds and where
            context["outlet_events"][asset].extra = summary.asset_extras(result)[asset.uri]
        return result

    cfg = validate_params()
    report = ingest_new_photos(cfg)
    version = stage_code(cfg)
    plan = plan_jobs(cfg, version, report)
    # Every backend's branch: emr (pre-flight, cluster, steps, sensors, teardown) and local (run_locally).
    branches = {name: backend_named(name).add_tasks(cfg, version, plan) for name in BACKENDS}
    backend = choose_backend(cfg, {name: b.entry.task_id for name, b in branches.items()})
    chain(report, any_new_photos(cfg, report), version, plan, backend, [b.entry for b in branches.values()])
    done = publish_summary(cfg, report, {name: b.result_task_id for name, b in branches.items()})
    chain([task for b in branches.values() for task in b.done], done)


fruits_pipeline()
