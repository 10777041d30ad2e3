"""`make ui`: Airflow's UI on this machine without Docker, then a clean stop on Ctrl-C."""
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from fruits.tools.local_airflow import free_port

pytestmark = pytest.mark.timeout(400)


def test_make_ui_serves_the_dag_with_the_printed_login_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fruits.tools.local_airflow", "--home", str(tmp_path / "home"),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    printed = []
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
            f"http://127.0.0.1:{port}/auth/token", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"username": user, "password": password}).encode())
        token = json.load(opener.open(token_request, timeout=10))["access_token"]
        dag = json.load(opener.open(urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v2/dags/fruits_pipeline", headers={"Authorization": f"Bearer {token}"}),
            timeout=10))
        assert dag["dag_id"] == "fruits_pipeline"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert "stopping Airflow" in rest
    time.sleep(1)
    with pytest.raises(OSError):  # nothing listens any more: every component stopped
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://127.0.0.1:{port}/", timeout=5)
