"""backend=local: run the run's SparkJobs with a spark-submit on this machine.

The local rendering of the backend-neutral job specs (fruits/jobs.py): the master is `local[*]`
(or FRUITS_SPARK_MASTER, e.g. docker-compose's standalone cluster), the Python workers are this
interpreter, which has the jobs' requirements installed, and the URIs are the run's own (the lake
folder for backend=local, see RunConfig.uri).
"""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from fruits.backends.jobs import SparkJob, is_cause, submit_args

log = logging.getLogger(__name__)

# A local run's driver JVM lives a minute or two: C2's JIT compilations cost more CPU than they
# save (measured on 2 cores: half the JVM's 30 CPU-seconds in a 3,000-image run; C1 only: -6 %
# wall time). EMR steps keep the JVM's defaults.
# Spark's console at WARN, with known-harmless warnings silenced at their source (the file says which).
LOG4J_CONFIG = Path(__file__).with_name("log4j2-local.properties")
LOCAL_DRIVER_JAVA_OPTIONS = f"-XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}"

# spark-submit's stderr, line by line, at the level the line itself says: log4j's pattern above
# (`yy/MM/dd HH:mm:ss LEVEL logger: message`), Python's `WARNING:`/`ERROR:` prefixes and
# `file.py:N: SomeWarning:` lines, a traceback's first line; anything else continues the line before.
_LOG4J = re.compile(r"^\d{2}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} (TRACE|DEBUG|INFO|WARN|ERROR|FATAL) ")
_PREFIX = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)[: ]")
_PY_WARNING = re.compile(r"^\S+:\d+: \w*Warning: ")
LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
    "CRITICAL": logging.CRITICAL,
}
# Lines that are harmless but printed where we cannot silence them: logged at DEBUG. TensorFlow's
# C++ logging says this once at import, before TF_CPP_MIN_LOG_LEVEL applies to it.
HARMLESS = (re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"),)


def line_level(line: str, previous: int) -> int:
    """The logging level of one line of spark-submit's stderr (previous: the line before's)."""
    if any(p.match(line) for p in HARMLESS):
        return logging.DEBUG
    for pattern in (_LOG4J, _PREFIX):
        found = pattern.match(line)
        if found:
            return LEVELS[found.group(1)]
    if _PY_WARNING.match(line):
        return logging.WARNING
    if line.startswith("Traceback (most recent call last)"):
        return logging.ERROR
    if is_cause(line):
        return logging.ERROR
    return previous if line[:1].isspace() or line.startswith(("Caused by", "\tat ")) else logging.INFO


class StepFailed(RuntimeError):
    pass


def spark_submit_executable() -> str:
    beside = Path(sys.executable).parent / "spark-submit"  # the venv's pyspark ships one
    found = str(beside) if beside.is_file() else shutil.which("spark-submit")
    if not found:
        raise FileNotFoundError("spark-submit not found next to the Python interpreter or on PATH")
    return found


def command(job: SparkJob, spark_submit: str, master: str = "local[*]") -> list[str]:
    """The local spark-submit command line of one job."""
    return [spark_submit, "--master", master, "--driver-java-options", LOCAL_DRIVER_JAVA_OPTIONS, *submit_args(job)]


class StepKilled(RuntimeError):
    """The task was told to stop (SIGTERM from Airflow, Ctrl-C): the job's processes were stopped too."""


# How long spark-submit gets to stop cleanly (shutdown hooks end the Python workers) before SIGKILL.
STOP_GRACE_S = 10


def _stop(proc: subprocess.Popen) -> None:
    """End the job's whole process group: spark-submit's JVM and the Python workers it forked."""
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def _stopped_on_signals(proc: subprocess.Popen):
    """While the job runs, SIGTERM/SIGINT to this task stop the job first, then end the task."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, frame):
        _stop(proc)
        chained = previous[signum]
        if callable(chained):  # e.g. Airflow's own SIGTERM handler (calls on_kill)
            chained(signum, frame)
        raise StepKilled(f"stopped by signal {signal.Signals(signum).name}; the Spark job was stopped too")

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if proc.poll() is None:  # any other way out (a timeout, an error) stops the job as well
            _stop(proc)


def relog(name: str, stream, causes: list[str] | None = None) -> str:
    """Log each line of a job's output stream at its own level; returns the last non-empty line.
    causes: collects the lines that say why the step failed (is_cause)."""
    level, last = logging.INFO, ""
    for line in stream:
        line = line.rstrip()
        if line:
            level = line_level(line, level)
            log.log(level, "[%s] %s", name, line)
            last = line
            if causes is not None and is_cause(line):
                causes.append(line)
    return last


def run_step(name: str, command: list[str]) -> dict:
    """Run one step, streaming stdout to the task log; returns the JSON of stdout's last line.

    Both streams (Spark's log on stderr; the job's messages and progress on stdout, where Spark's
    PythonRunner merges the Python driver's stderr) are re-logged line by line at each line's own
    level (line_level), so the task log's levels mean what they say. The job runs in its own
    process group under a guard (guard.py), so stopping the task stops all of it, and so does the
    task's own death, SIGKILL included: no orphaned spark-submit publishes after its task is gone."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    log.info("step %s: %s", name, " ".join(command))
    guarded = [sys.executable, "-m", "fruits.backends.local.guard", str(os.getpid()), *command]
    with subprocess.Popen(
        guarded, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    ) as proc:
        causes: list[str] = []
        relay = threading.Thread(target=relog, args=(name, proc.stderr, causes), daemon=True)
        relay.start()
        with _stopped_on_signals(proc):
            # The job's driver writes its stderr here too (Spark's PythonRunner).
            last = relog(name, proc.stdout, causes)
            proc.wait()
        relay.join(timeout=10)
    if proc.returncode != 0:
        why = f": {causes[-1]}" if causes else " (its log above says why)"
        raise StepFailed(f"step {name} failed with exit code {proc.returncode}{why}")
    try:
        return json.loads(last)
    except json.JSONDecodeError as exc:
        raise StepFailed(f"step {name} did not end with its JSON summary: {last!r}") from exc


def run_jobs(jobs: list[SparkJob], master: str = "local[*]") -> list[dict]:
    """Run the jobs in order; a failed one stops the rest, as CANCEL_AND_WAIT does on EMR.
    Returns each job's {"job", "wall_s", "summary"} (its JSON summary)."""
    spark_submit = spark_submit_executable()
    runs = []
    for job in jobs:
        started = time.monotonic()
        result = run_step(job.name, command(job, spark_submit, master))
        runs.append({"job": job.name, "wall_s": round(time.monotonic() - started, 1), "summary": result})
    return runs
