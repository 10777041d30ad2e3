"""Progress of the features job's model pass while it runs: images done out of the total, images/s
and time left, every PROGRESS_EVERY_S seconds on stderr (the task log, locally) and in a small JSON
beside the features (read by the EMR sensor, which shows it in its own log).

"Done" is counted by the Python workers, each writing the images its task has done to a file of
the driver's progress folder when that folder is on its machine (local mode: the count moves with
every batch); elsewhere (a cluster) it is the share of the model pass's finished tasks (Spark's
status tracker), which a batch's many tasks make fine-grained. (Spark's own input metrics do not
move while a task reads this source, and accumulators arrive only when a task ends.)
"""

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable

PROGRESS_EVERY_S = 10
JOB_GROUP = "fruits-model-pass"
WORKER_WRITE_EVERY_S = 1.0


class WorkerCounter:
    """In a Python worker: the images its task has done, kept in <folder>/<task>.json when the
    driver's folder is on this machine; a no-op elsewhere."""

    def __init__(self, folder: str):
        from pyspark import TaskContext

        ctx = TaskContext.get()
        task = f"{ctx.stageId()}-{ctx.partitionId()}-{ctx.attemptNumber()}" if ctx else str(os.getpid())
        self.path = os.path.join(folder, f"{task}.json") if os.path.isdir(folder) else None
        self.done, self._written = 0, 0.0

    def add(self, n: int) -> None:
        self.done += n
        if self.path and time.monotonic() - self._written >= WORKER_WRITE_EVERY_S:
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(str(self.done))
            os.replace(tmp, self.path)
            self._written = time.monotonic()


def counted_by_workers(folder: str) -> int:
    done = 0
    for name in os.listdir(folder):
        if name.endswith(".json"):
            try:
                with open(os.path.join(folder, name)) as f:
                    done += int(f.read() or 0)
            except (OSError, ValueError):
                continue  # replaced while read: counted on the next tick
    return done


def finished_task_share(spark) -> float:
    tracker = spark.sparkContext.statusTracker()
    infos = [
        tracker.getStageInfo(s)
        for j in tracker.getJobIdsForGroup(JOB_GROUP)
        if tracker.getJobInfo(j)
        for s in tracker.getJobInfo(j).stageIds
    ]
    tasks = sum(i.numTasks for i in infos if i)
    return sum(i.numCompletedTasks for i in infos if i) / tasks if tasks else 0.0


def describe(done: int, total: int, elapsed_s: float) -> dict:
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    left = (total - done) / rate if rate > 0 else None
    return {
        "done": done,
        "total": total,
        "percent": round(100 * done / total, 1) if total else 100.0,
        "images_per_s": round(rate, 1),
        "seconds_left": round(left) if left is not None else None,
        "elapsed_s": round(elapsed_s),
    }


def format_line(p: dict) -> str:
    left = f"~{p['seconds_left']} s left" if p["seconds_left"] is not None else "time left unknown yet"
    return f"progress: {p['done']}/{p['total']} images ({p['percent']} %), {p['images_per_s']} images/s, {left}"


class Reporter:
    """While the model pass runs: every `every_s`, a progress line on stderr and `publish(json)`.
    `folder` is where the workers count (WorkerCounter)."""

    def __init__(
        self, spark, total: int, publish: Callable[[str], None] | None = None, every_s: float = PROGRESS_EVERY_S
    ):
        self.spark, self.total, self.publish, self.every_s = spark, total, publish, every_s
        self.folder = tempfile.mkdtemp(prefix="fruits-progress-")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._started = 0.0

    def __enter__(self):
        ui = self.spark.sparkContext.uiWebUrl
        print(f"Spark UI: {ui} (while the job runs)" if ui else "Spark UI: off", file=sys.stderr, flush=True)
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        if exc[0] is None:
            self.report(self.total)
        shutil.rmtree(self.folder, ignore_errors=True)

    def done(self) -> int:
        # The workers' own count when they can write it here (local mode); else the finished tasks'
        # share, which on a cluster's many tasks is close (the two tiny reject-only tasks aside).
        if any(name.endswith(".json") for name in os.listdir(self.folder)):
            return min(self.total, counted_by_workers(self.folder))
        return min(self.total, int(self.total * finished_task_share(self.spark)))

    def report(self, done: int | None = None) -> None:
        line = describe(self.done() if done is None else done, self.total, time.monotonic() - self._started)
        print(format_line(line), file=sys.stderr, flush=True)
        if self.publish:
            try:
                self.publish(json.dumps({**line, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
            except Exception as exc:  # progress is for people: never fail the job over it
                print(f"WARNING: progress not written ({type(exc).__name__}: {exc})", file=sys.stderr)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.report()
            except Exception as exc:
                print(f"WARNING: progress unknown ({type(exc).__name__}: {exc})", file=sys.stderr)
