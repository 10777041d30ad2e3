"""backend=local: run the run's SparkJobs with a spark-submit on this machine.

The local rendering of the backend-neutral job specs (fruits/jobs.py): the master is `local[*]`
(or FRUITS_SPARK_MASTER, e.g. docker-compose's standalone cluster), the Python workers are this
interpreter, which has the jobs' requirements installed, and the URIs are the run's own (the lake
folder for backend=local, see PipelineConfig.uri).
"""
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

from fruits.jobs import SparkJob, submit_args

log = logging.getLogger(__name__)

# A local run's driver JVM lives a minute or two: C2's JIT compilations cost more CPU than they
# save (measured on 2 cores: half the JVM's 30 CPU-seconds in a 3,000-image run; C1 only: -6 %
# wall time). EMR steps keep the JVM's defaults.
LOCAL_DRIVER_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"


class StepFailed(RuntimeError):
    pass


def spark_submit_executable() -> str:
    beside = Path(sys.executable).parent / "spark-submit"  # the venv's pyspark ships one
    found = str(beside) if beside.is_file() else shutil.which("spark-submit")
    if not found:
        raise FileNotFoundError("spark-submit not found next to the Python interpreter or on PATH")
    return found


def command(job: SparkJob, spark_submit: str, master: str = "local[*]") -> List[str]:
    """The local spark-submit command line of one job."""
    return [spark_submit, "--master", master, "--driver-java-options", LOCAL_DRIVER_JAVA_OPTIONS,
            *submit_args(job)]


def run_step(name: str, command: List[str]) -> dict:
    """Run one step, streaming stdout to the task log; returns the JSON of stdout's last line.

    stderr (Spark's own log) is inherited: the task's log captures it, and it cannot end up after
    the summary line."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    log.info("step %s: %s", name, " ".join(command))
    last = ""
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        for line in proc.stdout:
            line = line.rstrip()
            log.info("[%s] %s", name, line)
            if line:
                last = line
    if proc.returncode != 0:
        raise StepFailed(f"step {name} failed with exit code {proc.returncode}")
    try:
        return json.loads(last)
    except json.JSONDecodeError as exc:
        raise StepFailed(f"step {name} did not end with its JSON summary: {last!r}") from exc


def run_jobs(jobs: List[SparkJob], master: str = "local[*]") -> List[dict]:
    """Run the jobs in order; a failed one stops the rest, as CANCEL_AND_WAIT does on EMR."""
    spark_submit = spark_submit_executable()
    return [run_step(job.name, command(job, spark_submit, master)) for job in jobs]
