"""DAG integrity: parses cleanly, its shape, teardown wiring, schedule, and the deployment switches read
at parse time."""

from airflow.sdk import TriggerRule

from fruits.backends import jobs

EDGES = {
    "validate_params": {
        "ingest_new_photos",
        "stage_code",
        "plan_jobs",
        "choose_backend",
        "any_new_photos",
        "emr.preflight",
        "emr.add_steps",
        "emr_serverless.preflight",
        "emr_serverless.end_runs",
        "run_locally",
        "publish_summary",
    },
    # the ingest report also feeds plan_jobs (a run without photos plans the PCA alone) and
    # publish_summary (a run without photos summarizes the space, not a batch)
    "ingest_new_photos": {"any_new_photos", "plan_jobs", "publish_summary"},
    "any_new_photos": {"stage_code"},
    "stage_code": {"plan_jobs", "emr.preflight", "emr_serverless.preflight"},
    "plan_jobs": {
        "choose_backend",
        "emr.terminate_cluster",
        "emr.create_cluster",
        "emr.add_steps",
        "run_locally",
        "emr.watch_extract_features",
        "emr.watch_reduce_dimensions",
        "emr_serverless.preflight",
        "emr_serverless.start_extract_features",
        "emr_serverless.start_reduce_dimensions",
        "emr_serverless.watch_extract_features",
        "emr_serverless.watch_reduce_dimensions",
        "emr_serverless.end_runs",  # the lease it revokes, as emr.terminate_cluster's
    },
    "choose_backend": {"emr.preflight", "emr_serverless.preflight", "run_locally"},
    "emr.preflight": {"emr.create_cluster"},
    "emr.create_cluster": {
        "emr.add_steps",
        "emr.terminate_cluster",
        "emr.watch_extract_features",
        "emr.watch_reduce_dimensions",
    },
    "emr.add_steps": {"emr.watch_extract_features", "emr.watch_reduce_dimensions", "emr.terminate_cluster"},
    "emr.watch_extract_features": {"emr.watch_reduce_dimensions"},
    "emr.watch_reduce_dimensions": {"emr.terminate_cluster", "publish_summary"},
    "emr.terminate_cluster": {"publish_summary"},
    # emr_serverless: per job a start and its sensor, one after the other; the teardown after them all
    "emr_serverless.preflight": {"emr_serverless.start_extract_features"},
    "emr_serverless.start_extract_features": {"emr_serverless.watch_extract_features", "emr_serverless.end_runs"},
    "emr_serverless.watch_extract_features": {"emr_serverless.start_reduce_dimensions"},
    "emr_serverless.start_reduce_dimensions": {"emr_serverless.watch_reduce_dimensions", "emr_serverless.end_runs"},
    "emr_serverless.watch_reduce_dimensions": {"emr_serverless.end_runs", "publish_summary"},
    "emr_serverless.end_runs": {"publish_summary"},
    "run_locally": {"publish_summary"},
    "publish_summary": set(),
}


def test_imports_without_errors_and_has_no_cycles(dagbag, pipeline_dag):
    assert dagbag.import_errors == {}
    pipeline_dag.check_cycle()  # raises on a cycle
    assert pipeline_dag.dag_id == "fruits_pipeline"


def test_schedule_is_daily_without_catchup(pipeline_dag):
    assert pipeline_dag.schedule == "@daily"
    assert pipeline_dag.catchup is False
    assert pipeline_dag.max_active_runs == 1


def test_task_ids_and_dependencies(pipeline_dag):
    assert set(pipeline_dag.task_ids) == set(EDGES)
    for task_id, downstream in EDGES.items():
        assert pipeline_dag.get_task(task_id).downstream_task_ids == downstream, task_id


def test_cluster_is_torn_down_whatever_happens_after_it_exists(pipeline_dag):
    create, add = pipeline_dag.get_task("emr.create_cluster"), pipeline_dag.get_task("emr.add_steps")
    terminate = pipeline_dag.get_task("emr.terminate_cluster")
    assert create.is_setup and add.is_setup and terminate.is_teardown
    assert terminate.trigger_rule == TriggerRule.ALL_DONE_SETUP_SUCCESS
    assert create.terminate_job_flow_on_failure is True
    # Clearing a sensor clears the cluster's setups and its teardown with it (Airflow's rule).
    cleared = pipeline_dag.partial_subset(
        ["emr.watch_extract_features"], include_upstream=False, include_downstream=False
    )
    assert {"emr.create_cluster", "emr.add_steps", "emr.terminate_cluster"} <= set(cleared.task_ids)


def test_job_runs_are_ended_whatever_happens_after_they_start(pipeline_dag):
    starts = [pipeline_dag.get_task(f"emr_serverless.start_{job.name}") for job in jobs.JOBS]
    end = pipeline_dag.get_task("emr_serverless.end_runs")
    assert all(start.is_setup for start in starts) and end.is_teardown
    assert end.trigger_rule == TriggerRule.ALL_DONE_SETUP_SUCCESS
    cleared = pipeline_dag.partial_subset(
        ["emr_serverless.watch_extract_features"], include_upstream=False, include_downstream=False
    )
    assert {"emr_serverless.start_extract_features", "emr_serverless.end_runs"} <= set(cleared.task_ids)


def test_serverless_operators_wait_longer_than_their_jobs(pipeline_dag):
    """The service's executionTimeoutMinutes ends a job that runs too long, never the sensor, which
    would leave it running; the start operator does not wait for the job (its default waiter, 25 x 60 s,
    would cancel a longer one)."""
    from fruits.backends.emr_serverless.builders import START_WAIT_S

    for job in jobs.JOBS:
        start = pipeline_dag.get_task(f"emr_serverless.start_{job.name}")
        assert start.wait_for_completion is False
        assert start.waiter_delay * start.waiter_max_attempts >= 15 * 60  # a stopped application's start
        sensor = pipeline_dag.get_task(f"emr_serverless.watch_{job.name}")
        assert sensor.timeout == job.timeout_s + START_WAIT_S and START_WAIT_S >= 15 * 60
        assert sensor.mode == "reschedule" and sensor.poke_interval >= 60 and sensor.retries == 0
        assert sensor.aws_conn_id == start.aws_conn_id == "aws_default"


def test_operators_are_configured_for_emr(pipeline_dag):
    # they retry like any task: a retry reuses what the first try made (test_emr_dag)
    assert (
        pipeline_dag.get_task("emr.add_steps").retries >= 1 and pipeline_dag.get_task("emr.create_cluster").retries >= 1
    )
    for job in jobs.JOBS:  # one sensor per job, with that job's timeout
        sensor = pipeline_dag.get_task(f"emr.watch_{job.name}")
        assert sensor.poke_interval >= 60
        assert sensor.timeout == job.timeout_s >= 3600
        assert sensor.max_attempts * sensor.poke_interval == sensor.timeout
        assert sensor.aws_conn_id == "aws_default"
    assert pipeline_dag.get_task("publish_summary").trigger_rule == TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS


def test_sensors_become_deferrable_by_a_deployment_switch(monkeypatch):
    from airflow.models.dagbag import DagBag

    from airflow_fixtures import REPO

    monkeypatch.setenv("FRUITS_EMR_DEFERRABLE", "true")  # needs a triggerer, hence off by default
    dag = DagBag(dag_folder=str(REPO / "dags"), include_examples=False).dags["fruits_pipeline"]
    sensor = dag.get_task("emr.watch_extract_features")
    assert sensor.deferrable is True
    assert sensor.max_attempts * sensor.poke_interval == sensor.timeout  # the trigger's own timeout


def test_the_dag_and_the_task_bodies_never_ask_which_backend_runs():
    """What differs by backend goes through its Backend object (fruits/backends/): no comparison with
    a backend's name in the DAG file or the shared task bodies, so a new backend touches neither."""
    import ast

    from fruits.backends import BACKENDS

    from airflow_fixtures import REPO

    for path in (REPO / "dags" / "fruits_pipeline.py", REPO / "plugins" / "fruits" / "pipeline.py"):
        names = [
            node.value
            for cmp in ast.walk(ast.parse(path.read_text()))
            if isinstance(cmp, ast.Compare)
            for node in ast.walk(cmp)
            if isinstance(node, ast.Constant) and node.value in BACKENDS
        ]
        assert names == [], path
