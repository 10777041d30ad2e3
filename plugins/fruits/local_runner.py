"""backend=local: run the EMR steps' own spark-submit arguments on this machine.

Only what is about the cluster changes: YARN master and cluster deploy mode become `local[*]`,
the executor shape for EMR nodes is dropped (it would starve a laptop: spark.task.cpus=2 on two
cores runs one task at a time), s3://<bucket>/<key> becomes <lake>/<key>, and the Python workers
are this interpreter, which has the jobs' requirements installed.
"""
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from fruits.lake import to_local

log = logging.getLogger(__name__)

CLUSTER_ONLY_OPTIONS = {"--deploy-mode", "--master", "--num-executors", "--executor-cores", "--executor-memory"}
CLUSTER_ONLY_CONF = ("spark.executor.", "spark.task.cpus", "spark.yarn.", "spark.pyspark.", "spark.dynamicAllocation.")
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


def local_command(args: List[str], lake: Optional[Path], spark_submit: str, master: str = "local[*]") -> List[str]:
    """Translate an EMR step's Args (spark-submit …) into a local spark-submit command.

    lake None keeps the s3:// URIs (a real S3 store, e.g. MinIO, reached through S3A)."""
    if not args or args[0] != "spark-submit":
        raise ValueError(f"not a spark-submit step: {args[:1]}")
    out = [spark_submit, "--master", master, "--driver-java-options", LOCAL_DRIVER_JAVA_OPTIONS]
    rest = iter(args[1:])
    for arg in rest:
        if arg in CLUSTER_ONLY_OPTIONS:
            next(rest)
        elif arg == "--conf":
            setting = next(rest)
            if not setting.startswith(CLUSTER_ONLY_CONF):
                out += ["--conf", setting]
        else:
            out.append(to_local(arg, lake) if lake is not None else arg)
    return out


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


def run_steps(steps: List[dict], lake: Optional[Path], master: str = "local[*]") -> List[dict]:
    """Run the steps in order; a failed step stops the rest, as CANCEL_AND_WAIT does on EMR."""
    spark_submit = spark_submit_executable()
    if lake is not None:
        Path(lake).mkdir(parents=True, exist_ok=True)
    results = []
    for step in steps:
        command = local_command(step["HadoopJarStep"]["Args"], lake, spark_submit, master)
        results.append(run_step(step["Name"], command))
    return results
