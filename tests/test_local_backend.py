"""backend=local: the run's SparkJobs as local spark-submit commands, on the lake folder or on S3."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fruits.backends import jobs
from fruits.backends.local import runner as local_runner
from fruits.backends.local.backend import LocalBackend
from fruits.config.run import LocalConfig, RunConfig
from fruits.lake import folder as lake

from airflow_fixtures import REPO

CFG = RunConfig(
    batch_id="b1",
    landing_dir="/landing",
    backend="local",
    pca_k=5,
    pca_variance=0.95,
    weights="random",
    bucket="fruits-local",
    root="/lake/",
    local=LocalConfig(lake="/lake", storage="lake", spark_master="local[*]"),
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


def test_the_jobs_become_local_spark_submits_on_the_lake_folder():
    features, pca = jobs.plan_jobs(CFG, "v1")
    cmd = local_runner.command(features, "/venv/bin/spark-submit")
    assert cmd[:3] == ["/venv/bin/spark-submit", "--master", "local[*]"]
    assert "yarn" not in cmd and "--deploy-mode" not in cmd
    assert not [a for a in cmd if a.startswith("s3://")]
    assert [a for a in cmd if a == "--conf"] == []  # the executor shape is EMR's alone
    assert cmd[cmd.index("--py-files") + 1] == "/lake/code/v1/fruits_jobs.zip"
    tail = cmd[cmd.index("/lake/code/v1/extract_features.py") + 1 :]
    assert tail == [
        "--images",
        "/lake/raw/batch_id=b1/",
        "--features",
        "/lake/features/",
        "--rejects",
        "/lake/rejects/",
        "--batch-id",
        "b1",
        "--weights",
        "random",
        "--precision",
        "fp32",
        "--model-cache",
        "/lake/models/",
        "--manifest",
        "/lake/manifests/batch_id=b1.json",
        "--lease",
        "/lake/manifests/batch_id=b1.lease",
        "--retention-hours",
        "168",
    ]
    pca_cmd = local_runner.command(pca, "spark-submit")
    pca_tail = pca_cmd[pca_cmd.index("/lake/code/v1/reduce_dimensions.py") + 1 :]
    assert pca_tail == [
        "--features",
        "/lake/features/",
        "--output",
        "/lake/pca/",
        "--k",
        "5",
        "--refit",
        "auto",
        "--retention-hours",
        "168",
    ]
    # a run without photos (the space is behind): the same PCA command, alone
    assert [local_runner.command(j, "spark-submit") for j in jobs.plan_jobs(CFG, "v1", with_photos=False)] == [pca_cmd]


def test_on_a_real_s3_store_the_uris_stay_and_the_master_is_configurable():
    """docker-compose: FRUITS_LOCAL_STORAGE=s3 (MinIO through S3A), FRUITS_SPARK_MASTER=spark://…"""
    settings = {"local_storage": "s3", "bucket": "fruits-local", "local_lake": "/lake"}
    bucket, root = LocalBackend().bucket_and_root(settings)
    assert (bucket, root) == ("fruits-local", "s3://fruits-local/")
    assert LocalBackend().bucket_and_root({**settings, "local_storage": "lake"})[1] == "/lake/"
    features, _ = jobs.plan_jobs(dataclasses.replace(CFG, root=root), "v1")
    cmd = local_runner.command(features, "spark-submit", "spark://spark-master:7077")
    assert cmd[:3] == ["spark-submit", "--master", "spark://spark-master:7077"]
    assert cmd[cmd.index("--py-files") + 1] == "s3://fruits-local/code/v1/fruits_jobs.zip"
    assert cmd[cmd.index("--images") + 1] == "s3://fruits-local/raw/batch_id=b1/"


def test_spark_submit_is_found_beside_this_python():
    assert Path(local_runner.spark_submit_executable()).name == "spark-submit"


def test_a_failed_job_stops_the_run(tmp_path, monkeypatch):
    """A failing first job raises and the second never starts (CANCEL_AND_WAIT, locally)."""
    fake = tmp_path / "spark-submit"
    marker = tmp_path / "ran"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 3\n')
    fake.chmod(0o755)
    monkeypatch.setattr(local_runner, "spark_submit_executable", lambda: str(fake))
    with pytest.raises(local_runner.StepFailed, match="extract_features failed with exit code 3"):
        local_runner.run_jobs(jobs.plan_jobs(CFG, "v1"))
    assert len(marker.read_text().splitlines()) == 1


def test_a_step_must_end_with_its_json_summary(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho working\necho '{\"read\": 3}'\n")
    script.chmod(0o755)
    assert local_runner.run_step("ok", [str(script)]) == {"read": 3}
    script.write_text("#!/bin/sh\necho no summary\n")
    with pytest.raises(local_runner.StepFailed, match="JSON summary"):
        local_runner.run_step("bad", [str(script)])


def test_the_steps_stderr_is_logged_at_each_lines_own_level(tmp_path, caplog):
    """In Airflow's UI a task's stderr used to show as ERROR, Spark's INFO lines included: each line
    now carries its own level, continuation lines (a stack trace) the level of the line they continue."""
    import logging

    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/sh\n"
        "echo '26/12/01 10:00:00 INFO SparkContext: Running Spark version 3.5.7' >&2\n"
        "echo '26/12/01 10:00:01 WARN TaskSetManager: Lost task 0.0' >&2\n"
        "echo 'progress: 10/20 images (50 %)'\n"  # the Python driver's stderr arrives on stdout
        "echo 'WARNING: --weights random: features are NOT ImageNet features'\n"
        "echo '/x/y.py:3: UserWarning: careful' >&2\n"
        "echo 'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR'\n"
        "echo '26/12/01 10:00:02 ERROR Executor: Exception in task 1.0' >&2\n"
        "printf '\\tat org.apache.spark.Foo(Foo.java:1)\\n' >&2\n"
        "echo '{\"read\": 1}'\n"
    )
    script.chmod(0o755)
    with caplog.at_level(logging.DEBUG, logger="fruits.backends.local.runner"):
        assert local_runner.run_step("s", [str(script)]) == {"read": 1}
    levels = {
        r.getMessage().split("] ", 1)[1]: r.levelname for r in caplog.records if r.getMessage().startswith("[s] ")
    }
    assert levels == {
        "26/12/01 10:00:00 INFO SparkContext: Running Spark version 3.5.7": "INFO",
        "26/12/01 10:00:01 WARN TaskSetManager: Lost task 0.0": "WARNING",
        "progress: 10/20 images (50 %)": "INFO",
        "WARNING: --weights random: features are NOT ImageNet features": "WARNING",
        "/x/y.py:3: UserWarning: careful": "WARNING",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR": "DEBUG",
        "26/12/01 10:00:02 ERROR Executor: Exception in task 1.0": "ERROR",
        "\tat org.apache.spark.Foo(Foo.java:1)": "ERROR",
        '{"read": 1}': "INFO",
    }


def test_the_line_that_ends_a_failed_step_is_an_error_and_the_tasks_failure_repeats_it(tmp_path, caplog):
    """PATH_NOT_FOUND used to reach the log at INFO (only the traceback's frames at ERROR): the UI's
    error filter hid the cause."""
    import logging

    cause = "pyspark.errors.exceptions.captured.AnalysisException: [PATH_NOT_FOUND] Path does not exist: file:/l/x."
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/sh\n"
        "echo 'Traceback (most recent call last):'\n"
        "echo '  File \"/x/pca.py\", line 3, in run'\n"
        f"echo '{cause}'\n"
        "echo 'error: --k 9: at most 3 components' >&2\n"
        "exit 1\n"
    )
    script.chmod(0o755)
    with caplog.at_level(logging.DEBUG, logger="fruits.backends.local.runner"):
        with pytest.raises(local_runner.StepFailed, match="exit code 1: (error: --k 9|pyspark.errors)"):
            local_runner.run_step("s", [str(script)])
    levels = {
        r.getMessage().split("] ", 1)[1]: r.levelname for r in caplog.records if r.getMessage().startswith("[s] ")
    }
    assert levels[cause] == "ERROR" and levels["error: --k 9: at most 3 components"] == "ERROR"


def test_the_jobs_python_workers_are_this_interpreter(tmp_path):
    """PySpark starts its workers with PYSPARK_PYTHON: it must be the venv that has the jobs' pins."""
    script = tmp_path / "job.sh"
    script.write_text(
        '#!/bin/sh\nprintf \'{"python": "%s", "driver": "%s"}\\n\' "$PYSPARK_PYTHON" "$PYSPARK_DRIVER_PYTHON"\n'
    )
    script.chmod(0o755)
    assert local_runner.run_step("env", [str(script)]) == {"python": sys.executable, "driver": sys.executable}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_stopping_the_task_stops_the_whole_job(tmp_path, sig):
    """Airflow stops a task with SIGTERM (Ctrl-C is SIGINT); the OOM killer, `kill -9` or a torn-down
    worker with SIGKILL to the task's whole process group, which gives it no chance to act: the job
    and its children must end with it, or an orphaned spark-submit publishes after its task is gone
    (it did: 7 s later, then 45 s later under SIGKILL)."""
    job = tmp_path / "spark-submit"
    # Like spark-submit: a long-lived child (the Python workers), then a publish at the end.
    job.write_text(
        f"#!/bin/sh\nsleep 60 &\necho $! > {tmp_path}/child.pid\necho started\n"
        f"sleep 4\ntouch {tmp_path}/published\necho '{{}}'\n"
    )
    job.chmod(0o755)
    task = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from fruits.backends.local import runner as local_runner; "
            f"local_runner.run_step('features', [{str(job)!r}])",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the task's own process group, as a worker runs it
    )
    deadline = time.time() + 30
    while not (tmp_path / "child.pid").exists():
        assert time.time() < deadline and task.poll() is None, task.communicate()
        time.sleep(0.05)
    time.sleep(0.3)
    if sig == signal.SIGKILL:
        os.killpg(task.pid, signal.SIGKILL)
        task.communicate(timeout=30)
        assert task.returncode == -signal.SIGKILL
    else:
        task.send_signal(sig)
        _, err = task.communicate(timeout=30)
        # SIGTERM ends the task with StepKilled; SIGINT with Python's own KeyboardInterrupt (chained)
        assert task.returncode != 0 and ("StepKilled" in err or "KeyboardInterrupt" in err), err[-2000:]
    time.sleep(5)  # past the moment the job would have published
    assert not (tmp_path / "published").exists()
    child = int((tmp_path / "child.pid").read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
