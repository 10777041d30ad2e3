"""Peak memory of a running process tree, sampled in a thread: what both benchmarks report."""

import threading
import time
from contextlib import contextmanager

import psutil


def tree_rss(proc: psutil.Process) -> dict:
    """RSS now of the whole tree, of the JVM(s), and of the largest Python worker (bytes)."""
    now = {"tree": 0, "jvm": 0, "worker": 0}
    for p in [proc] + proc.children(recursive=True):
        try:
            rss = p.memory_info().rss
            now["tree"] += rss
            if p.name() == "java":
                now["jvm"] += rss
            elif any("pyspark.daemon" in arg or "pyspark.worker" in arg for arg in p.cmdline()):
                now["worker"] = max(now["worker"], rss)
        except psutil.Error:  # ended between the listing and the reading
            pass
    return now


@contextmanager
def peak_rss(proc: psutil.Process, interval_s: float = 0.2):
    """Yields a dict of peaks (bytes: tree, jvm, worker), updated until the block ends."""
    peaks = {"tree": 0, "jvm": 0, "worker": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                for key, value in tree_rss(proc).items():
                    peaks[key] = max(peaks[key], value)
            except psutil.Error:
                pass
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peaks
    finally:
        done.set()
        sampler.join()
