"""Airflow's plugin loader runs every .py under plugins/ as a top-level module named by its file stem
(plugins_manager.load_plugins_from_plugin_directory: mod_name = path.stem; sys.modules[mod_name] = ...).
plugins/.airflowignore keeps it away from the fruits package, which is a library, not a plugin."""

import json
import os
import shutil
import subprocess
import sys

from conftest import REPO

# Loads plugins exactly as the scheduler does, then lists the modules it left under names that are
# not in a package (no '.') and whose file lies in the plugins folder.
PROBE = """
import json, os, sys
from airflow import plugins_manager
plugins_manager.load_plugins_from_plugin_directory()
folder = os.path.realpath(os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"])
print(json.dumps(sorted(name for name, mod in list(sys.modules.items())
                        if "." not in name and os.path.realpath(getattr(mod, "__file__", None) or "/")
                        .startswith(folder + os.sep))))
"""


def bare_plugin_modules(plugins_folder, tmp_path) -> list:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    return json.loads(probe.stdout.strip().splitlines()[-1])


def test_airflows_plugin_loader_executes_none_of_our_modules(tmp_path):
    assert bare_plugin_modules(REPO / "plugins", tmp_path) == []


def test_without_the_ignore_file_the_loader_would_run_them_under_bare_names(tmp_path):
    # The same folder without .airflowignore: what the probe above would find if the file went.
    shutil.copytree(
        REPO / "plugins", tmp_path / "plugins", ignore=shutil.ignore_patterns(".airflowignore", "__pycache__")
    )
    found = bare_plugin_modules(tmp_path / "plugins", tmp_path)
    assert {"settings", "params", "runner", "builders", "cli", "__init__"} <= set(found)
