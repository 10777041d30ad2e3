# Not `airflow standalone` (3.1): a Ctrl-C hung it in 8 of 10 tries, `kill` orphans every component (docstring).
"""Airflow on this machine with no Docker: api-server, scheduler and dag-processor on loopback.

`make ui` (`python -m fruits.tools.local_airflow`) starts it on the embedded default and prints the URL
and a login; Ctrl-C stops it. The browser test starts the same stack in a throw-away home.

AIRFLOW_HOME of the caller's choice, SQLite, LocalExecutor, loopback ports (free ones unless given),
the repository's dags/ and plugins/, the Simple auth manager with one admin and a fresh password.
No scheduled runs: runs are the ones a person triggers. Every component runs in its own process
group, which `stop()` terminates (then kills) whatever happened, so nothing outlives it. Each
component's output goes to <logs_dir>/<component>.log.

Why not `airflow standalone` (Airflow 3.1.8, measured with these settings on a 2-CPU machine): it keeps
its components in the terminal's process group, so a Ctrl-C reaches all of them and then it SIGTERMs
each; in 8 of 10 tries one of them (scheduler, dag-processor or triggerer) hung on that and standalone
waited for it for more than 45 s; a second Ctrl-C ended standalone and left the scheduler and its
LocalExecutor workers (or the dag-processor) running. `kill` (SIGTERM) ends standalone alone: all ~40
processes stay, still listening. It prints no URL, its "ready" comes before the API answers, it prints
the login only on the first start of a home (`make ui` reuses airflow_home), and it does not notice a
component that died. Start-up is no faster (API healthy and DAG listed after 16-32 s; this stack:
14-22 s). And it would need this stack's settings all the same: loopback (its API binds 0.0.0.0), the
execution-API URL on a port other than 8080 (else every task fails: connection refused), free
log-server ports (else 8793 and 8794), fewer than its 32 LocalExecutor workers.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO

from fruits.config.settings import REPO

COMPONENTS = ("api-server", "scheduler", "dag-processor")


def _own_group_and_die_with_parent() -> None:
    """preexec_fn: a new session (so stop() can kill the whole group), and SIGTERM when the test
    process dies without running its cleanup (killed by a CI timeout, say): no orphan Airflow."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# Loopback only: never through a proxy from the environment (or one urllib cached earlier).
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AirflowStack:
    def __init__(
        self,
        home: Path,
        logs_dir: Path,
        extra_env: dict[str, str] | None = None,
        username: str = "fruits",
        port: int | None = None,
    ):
        self.home = Path(home)
        self.logs_dir = Path(logs_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.username = username
        self.password = secrets.token_urlsafe(12)
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: list[IO] = []  # each component's log file, closed on stop
        self.airflow = str(Path(sys.executable).parent / "airflow")
        self.env = self._environment(extra_env or {})

    def _environment(self, extra: dict[str, str]) -> dict[str, str]:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        passwords = self.home / "simple_auth_manager_passwords.json"
        passwords.write_text(json.dumps({self.username: self.password}))
        # nothing of the test process's own Airflow (in-process dag.test) may leak into this one
        env = {k: v for k, v in os.environ.items() if not k.lstrip("_").startswith("AIRFLOW")}
        venv_bin = str(Path(sys.executable).parent)
        env.update(
            {
                "PATH": venv_bin + os.pathsep + env.get("PATH", "/usr/bin:/bin"),
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                # Airflow 3 runs LocalExecutor on SQLite (SequentialExecutor is gone).
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                # Only the runs the test triggers: no run for the @daily schedule, and no pause toggle.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                # No fixed ports: other Airflows may run on this machine (log server default 8793).
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                # Quick pick-up of the DAG file, few parsing processes on a small machine.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
                "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "180",
                "TF_CPP_MIN_LOG_LEVEL": "2",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    # --- processes -------------------------------------------------------------------------------

    def _run(self, args: list[str], timeout: float) -> None:
        log = self.logs_dir / f"{args[0]}-{args[1] if len(args) > 1 else ''}.log".replace(" ", "_")
        with open(log, "w") as out:
            proc = subprocess.run(
                [self.airflow, *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                preexec_fn=_own_group_and_die_with_parent,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({proc.returncode}); see {log}")

    def start(self) -> "AirflowStack":
        self._run(["db", "migrate"], timeout=240)
        for component in COMPONENTS:
            log = open(self.logs_dir / f"{component}.log", "w")
            self._logs.append(log)
            self.procs[component] = subprocess.Popen(
                [self.airflow, component],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_own_group_and_die_with_parent,
            )
        return self

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.logs_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"airflow {name} exited with {proc.returncode}:\n{tail}")

    def stop(self, grace_s: float = 15) -> None:
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            # the group too: LocalExecutor workers, gunicorn/uvicorn children, spark-submit JVMs
            _signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for log in self._logs:
            log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- REST API (readiness and cross-checks; the test itself goes through the UI) --------------

    def token(self) -> str:
        req = urllib.request.Request(
            f"{self.url}/auth/token",
            method="POST",
            data=json.dumps({"username": self.username, "password": self.password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with _LOOPBACK.open(req, timeout=10) as resp:
            return json.load(resp)["access_token"]

    def api(self, path: str, token: str) -> dict:
        req = urllib.request.Request(
            f"{self.url}/api/v2/{path.lstrip('/')}", headers={"Authorization": f"Bearer {token}"}
        )
        with _LOOPBACK.open(req, timeout=10) as resp:
            return json.load(resp)

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with _LOOPBACK.open(f"{self.url}/api/v2/monitor/health", timeout=5) as resp:
                    health = json.load(resp)
                if (
                    health.get("scheduler", {}).get("status") == "healthy"
                    and health.get("dag_processor", {}).get("status") == "healthy"
                ):
                    return
                last = health
            except (urllib.error.URLError, ConnectionError, OSError, ValueError) as exc:
                last = exc
            time.sleep(2)
        raise TimeoutError(f"Airflow not healthy after {timeout_s}s: {last}")

    def task_states(self, dag_id: str, run_id: str, token: str) -> dict[str, str | None]:
        path = f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances?limit=100"
        return {ti["task_id"]: ti["state"] for ti in self.api(path, token)["task_instances"]}

    def task_log_tails(self, dag_id: str, run_id: str, task_ids=None, chars: int = 4000) -> str:
        """The end of the task attempts' logs of a run (all tasks, or task_ids), for failure messages."""
        root = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        parts = []
        for log in sorted(root.glob("task_id=*/attempt=*.log")):
            task_id = log.parent.name[len("task_id=") :]
            if task_ids is None or task_id in task_ids:
                parts.append(f"--- {log.relative_to(root)}\n{log.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts) or f"(no task log under {root})"

    def wait_dag(self, dag_id: str, timeout_s: float) -> dict:
        """Until the dag-processor has serialized the DAG; fails early on an import error."""
        deadline = time.monotonic() + timeout_s
        token = self.token()
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                return self.api(f"dags/{dag_id}/details", token)
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
            errors = self.api("importErrors", token).get("import_errors", [])
            if errors:
                raise RuntimeError(f"DAG import errors: {errors}")
            time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout_s}s")


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Airflow UI on the embedded default, on loopback, until Ctrl-C")
    parser.add_argument(
        "--home",
        type=Path,
        default=REPO / "airflow_home",
        help="AIRFLOW_HOME (default: the one `make run` uses, so its runs show)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("FRUITS_UI_PORT", "0")) or None,
        help="default: 8080 when free, else any free port (env FRUITS_UI_PORT)",
    )
    args = parser.parse_args(argv)
    port = args.port or (8080 if _port_is_free(8080) else free_port())
    stack = AirflowStack(
        args.home,
        args.home / "ui-logs",
        port=port,
        extra_env={"FRUITS_SPARK_MASTER": os.environ.get("FRUITS_SPARK_MASTER", "local[*]")},
    )
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it like Ctrl-C: components included
    try:
        print(f"starting Airflow in {args.home} (logs: {stack.logs_dir}) ...", flush=True)
        stack.start()
        stack.wait_healthy(240)
        stack.wait_dag("fruits_pipeline", 180)
        print(
            f"\nAirflow UI: {stack.url}\nlogin: {stack.username} / {stack.password}\n"
            "trigger fruits_pipeline (backend local runs with no cloud); Ctrl-C stops everything",
            flush=True,
        )
        while True:
            stack.check_alive()
            time.sleep(2)
    except KeyboardInterrupt:
        print("\nstopping Airflow ...", flush=True)
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"Airflow did not start: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # setsid() in the child: the group id is the leader's pid
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    sys.exit(main())
