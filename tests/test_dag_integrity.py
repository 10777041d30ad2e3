"""DAG integrity: parses cleanly, shape, teardown wiring, schedule, params and their validation."""
import copy
import hashlib

import pytest
from airflow.sdk import TriggerRule
from airflow.exceptions import ParamValidationError

from fruits.config import run as config
from fruits.backends import jobs
from fruits.config import params
from fruits.config import settings as settings_module
from fruits.config.params import InvalidParam

EDGES = {
    "validate_params": {"ingest_new_photos", "stage_code", "plan_jobs", "choose_backend", "any_new_photos",
                        "emr.preflight", "emr.add_steps", "run_locally", "publish_summary"},
    "ingest_new_photos": {"any_new_photos"},
    "any_new_photos": {"stage_code"},
    "stage_code": {"plan_jobs", "emr.preflight"},
    "plan_jobs": {"choose_backend", "emr.create_cluster", "emr.add_steps", "run_locally", "emr.watch_extract_features",
                  "emr.watch_reduce_dimensions"},
    "choose_backend": {"emr.preflight", "run_locally"},
    "emr.preflight": {"emr.create_cluster"},
    "emr.create_cluster": {"emr.add_steps", "emr.terminate_cluster", "emr.watch_extract_features",
                           "emr.watch_reduce_dimensions"},
    "emr.add_steps": {"emr.watch_extract_features", "emr.watch_reduce_dimensions", "emr.terminate_cluster"},
    "emr.watch_extract_features": {"emr.watch_reduce_dimensions"},
    "emr.watch_reduce_dimensions": {"emr.terminate_cluster", "publish_summary"},
    "emr.terminate_cluster": {"publish_summary"},
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
    cleared = pipeline_dag.partial_subset(["emr.watch_extract_features"], include_upstream=False, include_downstream=False)
    assert {"emr.create_cluster", "emr.add_steps", "emr.terminate_cluster"} <= set(cleared.task_ids)


def test_operators_are_configured_for_emr(pipeline_dag):
    # they retry like any task: a retry reuses what the first try made (test_emr_dag)
    assert pipeline_dag.get_task("emr.add_steps").retries >= 1 and pipeline_dag.get_task("emr.create_cluster").retries >= 1
    for job in jobs.JOBS:  # one sensor per job, with that job's timeout
        sensor = pipeline_dag.get_task(f"emr.watch_{job.name}")
        assert sensor.poke_interval >= 60
        assert sensor.timeout == job.timeout_s >= 3600
        assert sensor.max_attempts * sensor.poke_interval == sensor.timeout
        assert sensor.aws_conn_id == "aws_default"
    assert pipeline_dag.get_task("publish_summary").trigger_rule == TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS


def test_params_form(pipeline_dag):
    p = pipeline_dag.params
    assert list(p.keys()) == ["batch_id", "landing_dir", "backend", "pca_k", "pca_variance", "weights",
                              "instance_type", "core_count", "task_spot_count"]
    assert p.get_param("backend").schema["enum"] == ["emr", "local"]
    assert p["backend"] == "local"  # the embedded default: no cloud needed
    assert p["batch_id"] is None and p["pca_k"] is None and p["pca_variance"] == 0.95
    for name in p.keys():
        assert p.get_param(name).description, name
    # EMR-only fields in their own section of the form; the batch-id rule in words
    assert {n for n in p.keys() if p.get_param(n).schema.get("section")} == {"instance_type", "core_count",
                                                                           "task_spot_count"}
    assert "letters, digits" in p.get_param("batch_id").description


@pytest.mark.parametrize("name,value", [
    ("backend", "gcp"), ("pca_k", 0), ("pca_k", "ten"), ("pca_k", 1281), ("pca_variance", 1.5), ("pca_variance", 0),
    ("core_count", 0), ("task_spot_count", -1), ("instance_type", "huge"), ("batch_id", "a/b"),
])
def test_the_form_rejects_bad_values(pipeline_dag, name, value):
    form = copy.deepcopy(pipeline_dag.params)
    with pytest.raises(ParamValidationError, match=f"Invalid input for param {name}:"):
        form[name] = value  # what the trigger form and the API do with a conf value


def _conf(**overrides):
    conf = {k: v.value for k, v in params.build_params().items()}
    conf.update(overrides)
    return conf


def _settings(tmp_path, **overrides):
    s = {**config.DEFAULTS, "local_lake": str(tmp_path / "lake")}
    s.update(overrides)
    return s


@pytest.mark.parametrize("name,value", [
    ("backend", "emr-ish"), ("pca_k", True), ("pca_k", -3), ("pca_k", 1281), ("pca_variance", float("nan")),
    ("pca_variance", "0.9"), ("core_count", 2.5), ("task_spot_count", 99), ("instance_type", "M5 large"),
    ("batch_id", "../etc"), ("landing_dir", "/no/such/folder"), ("weights", "model.bin"),
    ("weights", "/no/such/file.weights.h5"), ("surprise", 1),
])
def test_first_task_names_the_bad_param(tmp_path, name, value):
    with pytest.raises(InvalidParam, match=f"'{name}'"):
        config.resolve(_conf(**{"landing_dir": str(tmp_path), name: value}), _settings(tmp_path), "2025-01-02")


def test_emr_needs_a_bucket_and_weights_it_can_reach(tmp_path):
    with pytest.raises(InvalidParam, match="fruits_bucket"):
        config.resolve(_conf(landing_dir=str(tmp_path), backend="emr"), _settings(tmp_path), "2025-01-02")
    with pytest.raises(InvalidParam, match="'weights'.*file not found"):
        config.resolve(_conf(landing_dir=str(tmp_path), backend="emr", weights=str(tmp_path / "w.weights.h5")),
                       _settings(tmp_path, bucket="b"), "2025-01-02")


@pytest.mark.parametrize("backend", ["local", "emr"])
def test_a_weights_file_that_is_not_keras_weights_fails_the_first_task(tmp_path, backend):
    """Before ingest (and before any cluster): a .weights.h5 that is no HDF5 file cannot be loaded."""
    bogus = tmp_path / "w.weights.h5"
    bogus.write_bytes(b"<html>a download page</html>")
    with pytest.raises(InvalidParam, match="'weights'.*not an HDF5 file"):
        config.resolve(_conf(landing_dir=str(tmp_path), backend=backend, weights=str(bogus)),
                       _settings(tmp_path, bucket="b"), "2025-01-02")


def test_a_local_run_defaults_to_the_shared_weights_like_make_run(tmp_path, monkeypatch):
    from fruits_jobs.contract import DEFAULT_WEIGHTS_FILE

    (tmp_path / "shared" / "models").mkdir(parents=True)
    genuine = tmp_path / "shared" / "models" / DEFAULT_WEIGHTS_FILE
    genuine.write_bytes(b"\x89HDF\r\n\x1a\n")
    monkeypatch.setenv("FRUITS_SHARED_DIR", str(tmp_path / "shared"))
    assert config.resolve(_conf(landing_dir=str(tmp_path)), _settings(tmp_path), "2025-01-02").weights == str(genuine)
    monkeypatch.setenv("FRUITS_SHARED_DIR", str(tmp_path / "none"))
    assert config.resolve(_conf(landing_dir=str(tmp_path)), _settings(tmp_path), "2025-01-02").weights == "imagenet"


def test_a_local_weights_file_is_staged_by_content_for_emr(tmp_path):
    """A cluster cannot read this machine's disk: the file goes to models/<sha256>.weights.h5
    (stage_code uploads it), and the job reads it there."""
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n and the rest")
    cfg = config.resolve(_conf(landing_dir=str(tmp_path), backend="emr", weights=str(weights)),
                         _settings(tmp_path, bucket="b"), "2025-01-02")
    assert cfg.weights == f"s3://b/models/{hashlib.sha256(weights.read_bytes()).hexdigest()}.weights.h5"
    assert cfg.weights_file == str(weights)
    local = config.resolve(_conf(landing_dir=str(tmp_path), weights=str(weights)), _settings(tmp_path), "2025-01-02")
    assert (local.weights, local.weights_file) == (str(weights), None)  # a local run reads it where it is
    exported = tmp_path / "mobilenet.onnx"  # an ONNX export the job made keeps its kind when staged
    exported.write_bytes(b"onnx bytes")
    cfg = config.resolve(_conf(landing_dir=str(tmp_path), backend="emr", weights=str(exported)),
                         _settings(tmp_path, bucket="b"), "2025-01-02")
    assert cfg.weights == f"s3://b/models/{hashlib.sha256(b'onnx bytes').hexdigest()}.onnx"


@pytest.mark.parametrize("itype", ["m7g.2xlarge", "c6gn.4xlarge", "r8g.xlarge", "t4g.large", "im4gn.xlarge",
                                   "x2gd.xlarge", "m6gd.2xlarge", "is4gen.xlarge", "g5g.xlarge", "a1.xlarge"])
def test_graviton_types_are_refused_with_an_x86_suggestion(tmp_path, itype):
    """Blocker 5: tensorflow-cpu has no aarch64 wheel, so an arm64 node would fail its bootstrap."""
    with pytest.raises(InvalidParam, match=r"'instance_type'.*Graviton.*x86_64.*m5\.2xlarge"):
        params.validate(_conf(instance_type=itype))
    with pytest.raises(InvalidParam, match=r"'fruits_primary_instance_type'.*Graviton.*x86_64"):
        config.resolve(_conf(landing_dir=str(tmp_path), backend="emr", weights="s3://b/w.weights.h5"),
                       _settings(tmp_path, bucket="b", primary_instance_type=itype), "2025-01-02")


@pytest.mark.parametrize("itype", ["m5.2xlarge", "m6i.2xlarge", "c7i-flex.large", "g4dn.xlarge", "m5zn.large",
                                   "x2iedn.xlarge", "r5dn.large", "m7a.xlarge"])
def test_x86_types_pass(itype):
    assert params.validate(_conf(instance_type=itype))["instance_type"] == itype


def test_defaults_resolve_from_settings_and_run_date(tmp_path):
    from fruits.config.settings import shared_weights

    cfg = config.resolve(_conf(), _settings(tmp_path, landing_dir=str(tmp_path), bucket="fruits-prod"), "2025-01-02")
    assert (cfg.batch_id, cfg.backend, cfg.weights, cfg.landing_dir) == (
        "2025-01-02", "local", shared_weights() or "imagenet", str(tmp_path))
    emr = config.resolve(_conf(backend="emr", batch_id="b1", pca_k=7),
                         _settings(tmp_path, landing_dir=str(tmp_path), bucket="fruits-prod"), "2025-01-02")
    assert emr.weights == "s3://fruits-prod/models/mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"
    assert (emr.batch_id, emr.pca_k) == ("b1", 7)
    assert config.PipelineConfig.from_dict(emr.to_dict()) == emr


def test_sensors_become_deferrable_by_a_deployment_switch(monkeypatch):
    from airflow.models.dagbag import DagBag

    from airflow_fixtures import REPO

    monkeypatch.setenv("FRUITS_EMR_DEFERRABLE", "true")  # needs a triggerer, hence off by default
    dag = DagBag(dag_folder=str(REPO / "dags"), include_examples=False).dags["fruits_pipeline"]
    sensor = dag.get_task("emr.watch_extract_features")
    assert sensor.deferrable is True
    assert sensor.max_attempts * sensor.poke_interval == sensor.timeout  # the trigger's own timeout


def test_a_run_looks_up_only_the_settings_it_needs(tmp_path):
    """Every unset Variable looked up is an ERROR line in Airflow 3.1's log: `make run` (local,
    landing and weights given) must look up none, an EMR run only the EMR ones."""
    looked_up = []
    settings = config.LazySettings(lambda name: looked_up.append(name) or _settings(tmp_path, bucket="b")[name])
    config.resolve(_conf(landing_dir=str(tmp_path), weights="random"), settings, "2025-01-02")
    assert set(looked_up) == {"local_storage", "local_lake", "spark_master"} <= settings_module.ENV_ONLY
    looked_up.clear()
    emr = config.resolve(_conf(landing_dir=str(tmp_path), backend="emr", weights="s3://b/w.weights.h5"),
                         config.LazySettings(lambda name: looked_up.append(name) or _settings(tmp_path, bucket="b")[name]),
                         "2025-01-02")
    assert "bucket" in looked_up and "subnet_id" in looked_up and "landing_dir" not in looked_up
    assert emr.emr_service_role == config.DEFAULTS["emr_service_role"]
