"""The two packages are installed (pyproject.toml, `make install`), so nothing edits sys.path."""

import ast
import os
import subprocess
import sys

from conftest import REPO

FOLDERS = ("dags", "plugins", "spark_jobs", "bench", "tests")


def sys_path_edits(source: str) -> list:
    """Line numbers of sys.path.insert/append/extend calls and of assignments to sys.path."""

    def is_sys_path(node) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        )

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_path(node.func.value):
            lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            lines += [node.lineno for t in targets if is_sys_path(t)]
    return sorted(lines)


def test_the_detector_finds_every_form_of_edit():
    code = (
        "import sys\nsys.path.insert(0, 'x')\nsys.path.append('y')\nsys.path = []\nsys.path += ['z']\nprint(sys.path)\n"
    )
    assert sys_path_edits(code) == [2, 3, 4, 5]


def test_no_code_edits_sys_path():
    found = {
        str(path.relative_to(REPO)): lines
        for folder in FOLDERS
        for path in sorted((REPO / folder).rglob("*.py"))
        if (lines := sys_path_edits(path.read_text()))
    }
    assert found == {}


def test_both_packages_import_from_anywhere_without_pythonpath(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import fruits, fruits_jobs.contract; print(fruits.__file__); print(fruits_jobs.contract.__file__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == [
        str(REPO / "plugins" / "fruits" / "__init__.py"),
        str(REPO / "spark_jobs" / "fruits_jobs" / "contract.py"),
    ]


def test_each_package_says_what_lives_in_it():
    inits = sorted((REPO / "plugins" / "fruits").rglob("__init__.py")) + [
        REPO / "spark_jobs" / "fruits_jobs" / "__init__.py"
    ]
    missing = [
        str(p.relative_to(REPO)) for p in inits if not (ast.get_docstring(ast.parse(p.read_text())) or "").strip()
    ]
    assert len(inits) >= 7 and missing == []


def test_the_checkout_is_found_without_an_editable_install(tmp_path):
    """Installed as wheels elsewhere, the packages find spark_jobs/ (the bundle's bootstrap and lock)
    and ../shared through FRUITS_REPO, and say what to set when they cannot."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import fruits, fruits_jobs.bundle as b, sys; assert 'site' in fruits.__file__, fruits.__file__; "
        "print(b.spark_jobs_dir()); print(len(b.build_bundle(sys.argv[1]).files))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    found = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "bundle")],
        cwd=tmp_path,
        env={**env, "FRUITS_REPO": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.split()[0] == str(REPO / "spark_jobs") and int(found.stdout.split()[1]) >= 5
    lost = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "bundle")],
        cwd=tmp_path,
        env={k: v for k, v in env.items() if k != "FRUITS_REPO"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lost.returncode != 0 and "set FRUITS_REPO" in lost.stderr
