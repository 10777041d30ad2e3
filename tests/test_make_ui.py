"""`make ui`: Airflow's UI on this machine without Docker, then a clean stop on Ctrl-C.

Runs the `ui` target's own command (not `make ui`, whose `install` prerequisite may reinstall the venv),
as a terminal's foreground job: its own process group, and Ctrl-C is SIGINT to that whole group.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from fruits.tools.local_airflow import free_port

pytestmark = pytest.mark.timeout(400)

REPO = Path(__file__).resolve().parents[1]
UI_COMMAND = "-m fruits.tools.local_airflow"


def ui_recipe() -> str:
    match = re.search(r"^ui:.*\n((?:\t.*\n?)+)", (REPO / "Makefile").read_text(), re.M)
    assert match, "no `ui` target in the Makefile"
    return match.group(1)


def alive(procs: list[psutil.Process]) -> list[str]:
    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
        except psutil.NoSuchProcess:
            pass
    return left


def test_the_ui_target_runs_the_command_tested_here():
    assert f"$(BIN)/python {UI_COMMAND}" in ui_recipe(), ui_recipe()


def test_make_ui_serves_the_dag_with_the_printed_login_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, *UI_COMMAND.split(), "--home", str(tmp_path / "home"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    printed = []
    components: list[psutil.Process] = []
    ports: set[int] = set()
    try:
        deadline = time.monotonic() + 360
        while time.monotonic() < deadline and not any(line.startswith("login: ") for line in printed):
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(line.rstrip())
        text = "\n".join(printed)
        assert f"Airflow UI: http://127.0.0.1:{port}" in text, text
        user, password = re.search(r"^login: (\S+) / (\S+)$", text, re.M).groups()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        token_request = urllib.request.Request(
            f"http://127.0.0.1:{port}/auth/token",
            method="POST",
            headers={"Content-Type": "application/json"},
            data=json.dumps({"username": user, "password": password}).encode(),
        )
        token = json.load(opener.open(token_request, timeout=10))["access_token"]
        dag = json.load(
            opener.open(
                urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/v2/dags/fruits_pipeline", headers={"Authorization": f"Bearer {token}"}
                ),
                timeout=10,
            )
        )
        assert dag["dag_id"] == "fruits_pipeline"
        # Everything it started (components, their workers, log servers) and every port they listen on.
        components = psutil.Process(proc.pid).children(recursive=True)
        pids = {p.pid for p in components}
        ports = {c.laddr.port for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.pid in pids}
        assert port in ports, (port, ports)
        assert {
            c.laddr.ip for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.laddr.port == port
        } == {"127.0.0.1"}
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: to the terminal's foreground process group
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert "stopping Airflow" in rest
    psutil.wait_procs(components, timeout=10)
    assert alive(components) == [], f"still running after Ctrl-C: {alive(components)}"
    listening = {c.laddr.port for c in psutil.net_connections("inet") if c.status == "LISTEN"}
    assert not ports & listening, f"still listening after Ctrl-C: {ports & listening}"
