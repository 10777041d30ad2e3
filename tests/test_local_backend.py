"""backend=local: the EMR steps' arguments translated for a local spark-submit, and the lake mapping."""
from airflow_fixtures import REPO  # noqa: F401  (first: isolates Airflow)

import sys
from pathlib import Path

import pytest

from fruits import emr, lake, local_runner
from fruits.config import PipelineConfig

CFG = PipelineConfig(
    batch_id="b1", landing_dir="/landing", backend="local", pca_k=5, pca_variance=0.95, weights="random",
    instance_type="m5.2xlarge", core_count=2, task_spot_count=0, bucket="fruits-local",
    local_lake="/lake", spark_jobs_dir="/jobs",
)


def test_s3_uris_map_onto_the_lake():
    assert lake.to_local("s3://any-bucket/raw/batch_id=1/", Path("/lake")) == "/lake/raw/batch_id=1/"
    assert lake.to_local("s3://b/pca/metrics.json", Path("/lake")) == "/lake/pca/metrics.json"
    assert lake.to_local("random", Path("/lake")) == "random"
    assert lake.to_local("s3://b", Path("/lake")) == "/lake"


def test_lake_defaults_to_data_lake_and_follows_the_env(monkeypatch):
    monkeypatch.delenv("FRUITS_LOCAL_LAKE", raising=False)
    assert lake.default_lake() == (REPO / "data" / "lake").resolve()
    monkeypatch.setenv("FRUITS_LOCAL_LAKE", "/elsewhere/lake")
    assert lake.default_lake() == Path("/elsewhere/lake")


def test_the_same_steps_become_local_spark_submits():
    features, pca = emr.spark_steps(CFG, "v1")
    cmd = local_runner.local_command(features["HadoopJarStep"]["Args"], Path("/lake"), "/venv/bin/spark-submit")
    assert cmd[:3] == ["/venv/bin/spark-submit", "--master", "local[*]"]
    assert "yarn" not in cmd and "--deploy-mode" not in cmd
    assert not [a for a in cmd if a.startswith("s3://")]
    confs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--conf"]
    assert confs == []  # the executor shape is EMR's; the jobs set their own session settings
    assert cmd[cmd.index("--py-files") + 1] == "/lake/code/v1/fruits_jobs.zip"
    # everything after the entrypoint is the job contract, unchanged but for the mapping
    tail = cmd[cmd.index("/lake/code/v1/extract_features.py") + 1:]
    assert tail == ["--images", "/lake/raw/batch_id=b1/", "--features", "/lake/features/",
                    "--rejects", "/lake/rejects/", "--batch-id", "b1", "--weights", "random"]
    pca_cmd = local_runner.local_command(pca["HadoopJarStep"]["Args"], Path("/lake"), "spark-submit")
    assert pca_cmd[-6:] == ["--features", "/lake/features/", "--output", "/lake/pca/batch_id=b1/", "--k", "5"]


def test_on_a_real_s3_store_the_uris_stay_and_the_master_is_configurable():
    """docker-compose: FRUITS_LOCAL_STORAGE=s3 (MinIO through S3A), FRUITS_SPARK_MASTER=spark://…"""
    features, _ = emr.spark_steps(CFG, "v1")
    cmd = local_runner.local_command(features["HadoopJarStep"]["Args"], None, "spark-submit",
                                     "spark://spark-master:7077")
    assert cmd[:3] == ["spark-submit", "--master", "spark://spark-master:7077"]
    assert cmd[cmd.index("--py-files") + 1] == "s3://fruits-local/code/v1/fruits_jobs.zip"
    assert cmd[cmd.index("--images") + 1] == "s3://fruits-local/raw/batch_id=b1/"


def test_spark_submit_is_found_beside_this_python():
    assert Path(local_runner.spark_submit_executable()).name == "spark-submit"


def test_a_failed_step_stops_the_run(tmp_path, monkeypatch):
    """A failing first step raises and the second never starts (CANCEL_AND_WAIT, locally)."""
    fake = tmp_path / "spark-submit"
    marker = tmp_path / "ran"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(local_runner, "spark_submit_executable", lambda: str(fake))
    with pytest.raises(local_runner.StepFailed, match="extract_features b1 failed with exit code 3"):
        local_runner.run_steps(emr.spark_steps(CFG, "v1"), tmp_path / "lake")
    assert len(marker.read_text().splitlines()) == 1


def test_a_step_must_end_with_its_json_summary(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho working\necho '{\"read\": 3}'\n")
    script.chmod(0o755)
    assert local_runner.run_step("ok", [str(script)]) == {"read": 3}
    script.write_text("#!/bin/sh\necho no summary\n")
    with pytest.raises(local_runner.StepFailed, match="JSON summary"):
        local_runner.run_step("bad", [str(script)])
    assert sys.executable  # PYSPARK_PYTHON is this interpreter (set in run_step's env)
