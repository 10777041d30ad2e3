"""Runs a job so that it dies with the task that started it, however the task ends.

    python -m fruits.backends.local.guard PARENT_PID COMMAND...

runner.run_step starts this guard in a process group of its own, and the guard starts the job in
that group. The guard asks Linux for PR_SET_PDEATHSIG: when the task's process dies, even by
SIGKILL (the OOM killer, `kill -9`, a worker torn down, Airflow's escalation), the kernel sends the
guard SIGTERM, which needs nothing from the dying task. On SIGTERM (that, or the runner stopping the
job) the guard ends the whole group: SIGTERM first (Spark's shutdown hooks), SIGKILL after a grace
period. The JVM's death closes the pyspark daemon's stdin, which then ends its own group of workers.
Standard library only; ours, because no library gives a child "die with my parent" on its own.
"""

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
GRACE_S = 10  # how long the job gets to stop cleanly before SIGKILL


def die_with_parent(sig: int) -> bool:
    """Ask the kernel to send sig when the parent process dies (Linux); False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def end_group(child: subprocess.Popen) -> None:
    """SIGTERM to the whole group (this guard ignores it), then SIGKILL to what is left, guard included."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    try:
        child.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(0, signal.SIGKILL)


def main(argv: list[str]) -> int:
    parent, command = int(argv[0]), argv[1:]
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # the task died before the request above: nothing to guard for
        return 1
    child = subprocess.Popen(command)  # same process group: end_group reaches it and its children
    signal.signal(signal.SIGTERM, lambda signum, frame: end_group(child))
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
