"""The Airflow side's locks, written by `make lock` from the versions installed here:
requirements-dev.lock, the whole closure of requirements-dev.txt, is what `make install` installs
into the venv; requirements.lock, the closure of requirements.txt alone (no test tools), is what the
Airflow image installs. Airflow's constraints file stands in for neither: these locks are ours.
(The Spark jobs' own lock, spark_jobs/requirements.lock, is held by tests/test_emr_parity.py.)"""

import re
import sysconfig
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
DEV_LOCK = REPO / "requirements-dev.lock"
LOCK = REPO / "requirements.lock"
JOB_LOCK = REPO / "spark_jobs" / "requirements.lock"
REQUIREMENTS = REPO / "requirements.txt"
DEV_REQUIREMENTS = REPO / "requirements-dev.txt"
JOB_REQUIREMENTS = REPO / "spark_jobs" / "requirements.txt"
AIRFLOW_DOCKERFILE = REPO / "docker" / "airflow" / "Dockerfile"
MAKEFILE = REPO / "Makefile"
# In the venv but in no lock: the installer the Makefile puts in the venv before any lock (uv, and
# pip, the venv's own) and our package (installed editable, --no-deps).
NOT_LOCKED = {"pip", "uv", "fruits-pipeline"}


def canonical(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(path: Path) -> dict[str, str]:
    """name -> version of a lock compiled for one platform: NAME==VERSION lines only, each once."""
    pins = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        assert m, f"{path.name}: {line!r} is not a NAME==VERSION pin (regenerate it with `make lock`)"
        name = canonical(m[1])
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = m[2]
    assert pins, f"{path.name} pins nothing"
    return pins


def requirements(path: Path) -> list[Requirement]:
    """The requirements of a requirements*.txt, following its `-r` includes."""
    found = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            found += requirements(path.parent / line[3:].strip())
        elif line:
            found.append(Requirement(line))
    return found


def site_distributions():
    """The distributions in this interpreter's site-packages (the venv), not in source folders on sys.path."""
    return metadata.distributions(path=sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}))


def installed() -> dict[str, str]:
    """name -> version of every distribution installed in the venv."""
    found = {}
    for dist in site_distributions():
        name = canonical(dist.metadata["Name"])
        assert name not in found, f"{name} is installed twice in the venv ({found[name]}, {dist.version})"
        found[name] = dist.version
    return found


def closure(roots: list[Requirement]) -> dict[str, str]:
    """name -> installed version of roots and everything they require (extras followed, environment
    markers evaluated here: Linux x86_64 CPython 3.11, the locks' target), from the installed metadata."""
    dists = {canonical(d.metadata["Name"]): d for d in site_distributions()}
    done: dict[str, set] = {}
    todo = [(canonical(r.name), {""} | r.extras) for r in roots if r.marker is None or r.marker.evaluate()]
    while todo:
        name, extras = todo.pop()
        extras -= done.get(name, set())
        if not extras:
            continue
        assert name in dists, f"{name} is required but not installed"
        done.setdefault(name, set()).update(extras)
        for spec in dists[name].requires or []:
            req = Requirement(spec)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
                todo.append((canonical(req.name), {""} | req.extras))
    return {name: dists[name].version for name in done}


def test_locks_are_generated_by_make_lock():
    for lock in (DEV_LOCK, LOCK):
        header = lock.read_text().split("\n\n")[0].splitlines()[:4]
        assert any("make lock" in line for line in header if line.startswith("#")), f"{lock.name}: header"
        lock_pins(lock)


def test_the_runtime_lock_agrees_with_the_dev_lock_on_every_package():
    """requirements.lock is the runtime part of requirements-dev.lock: every package of it, same version."""
    dev, runtime = lock_pins(DEV_LOCK), lock_pins(LOCK)
    assert set(runtime) < set(dev), f"only in requirements.lock: {sorted(set(runtime) - set(dev))}"
    differ = {name: (version, dev[name]) for name, version in runtime.items() if dev[name] != version}
    assert differ == {}, f"requirements.lock vs requirements-dev.lock: {differ} (run `make lock`)"


def test_the_jobs_lock_agrees_with_the_airflow_locks():
    """The Spark jobs run locally in the venv (requirements.lock's packages) and on EMR (the jobs'
    lock): the same versions."""
    runtime, jobs = lock_pins(LOCK), lock_pins(JOB_LOCK)
    differ = {name: (version, runtime.get(name)) for name, version in jobs.items() if runtime.get(name) != version}
    assert differ == {}, f"spark_jobs/requirements.lock vs requirements.lock: {differ} (run `make lock`)"


def test_every_top_level_requirement_is_locked_at_its_version():
    runtime = requirements(REQUIREMENTS)  # includes spark_jobs/requirements.txt
    assert {canonical(r.name) for r in requirements(JOB_REQUIREMENTS)} <= {canonical(r.name) for r in runtime}
    for lock, reqs in ((LOCK, runtime), (DEV_LOCK, requirements(DEV_REQUIREMENTS))):
        pins = lock_pins(lock)
        for req in reqs:
            version = pins.get(canonical(req.name))
            assert version, f"{req.name} is not in {lock.name} (run `make lock`)"
            exact = [s.version for s in req.specifier if s.operator == "=="]
            if exact:
                assert exact == [version], f"{lock.name}: {req.name}=={version}, the requirements say {req}"
            else:  # a range (sqlalchemy>=2.0,<2.1)
                assert req.specifier.contains(version), f"{lock.name}: {req.name}=={version} is not {req}"


def test_each_lock_is_exactly_its_requirements_closure():
    """Nothing missing and nothing more: requirements.lock has no test tools (pytest, moto, selenium
    ...), requirements-dev.lock no leftover of a dropped requirement. The closure is computed from
    the installed packages' own metadata, independently of uv's resolver."""
    for lock, path in ((LOCK, REQUIREMENTS), (DEV_LOCK, DEV_REQUIREMENTS)):
        pins, needed = lock_pins(lock), closure(requirements(path))
        more, less = sorted(set(pins) - set(needed)), sorted(set(needed) - set(pins))
        assert (more, less) == ([], []), f"{lock.name}: not needed by {path.name} {more}, needed and not locked {less}"
    assert not {"pytest", "moto", "selenium", "check-jsonschema"} & set(lock_pins(LOCK))


def test_the_venv_is_requirements_dev_lock():
    """What `make install` made is what the lock says: every locked version installed, nothing else
    but the installer and our own package."""
    lock, venv = lock_pins(DEV_LOCK), installed()
    differ = {name: (version, venv[name]) for name, version in lock.items() if name in venv and venv[name] != version}
    missing = sorted(set(lock) - set(venv))
    extra = sorted(set(venv) - set(lock) - NOT_LOCKED)
    assert (differ, missing, extra) == ({}, [], []), (
        f"locked vs installed {differ}; locked, not installed {missing}; installed, not locked {extra}: "
        "`make install` after a change of the lock, `make lock` after a change of requirements*.txt"
    )
    assert "fruits-pipeline" in venv


def test_the_image_installs_the_runtime_lock_at_the_image_airflow_version():
    text = AIRFLOW_DOCKERFILE.read_text()
    tag = re.search(r"^FROM apache/airflow:(\S+)-python3\.11\b", text, re.M).group(1)
    assert lock_pins(LOCK)["apache-airflow"] == tag, "requirements.lock's apache-airflow is not the image's"
    assert re.search(
        r"^RUN pip install [^\n]*\"apache-airflow==\$\{AIRFLOW_VERSION\}\" -r /opt/fruits/requirements\.lock$",
        text,
        re.M,
    )
    assert "requirements.txt" not in re.sub(r"#.*", "", text)  # the lock only, not a fresh resolution


def test_make_install_installs_the_dev_lock_and_make_lock_writes_all_three():
    text = MAKEFILE.read_text()
    stamp = re.search(r"^\$\(VENV\)/\.installed:([^\n]*)\n((?:\t[^\n]*\n)+)", text, re.M)
    assert "requirements-dev.lock" in stamp[1].split()
    assert re.search(r"uv pip install [^\n]*-r requirements-dev\.lock$", stamp[2], re.M)
    assert "requirements-dev.txt" not in stamp[2]
    lock = re.search(r"^lock:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.M)[1]
    for source in ("spark_jobs/requirements.txt", "requirements-dev.txt", "requirements.txt"):
        assert re.search(rf"uv pip compile {re.escape(source)} -c build/freeze\.txt", lock), source
    for written in ("spark_jobs/requirements.lock", "requirements-dev.lock", "requirements.lock"):
        assert re.search(rf"> build/lock/{re.escape(written)}$", lock, re.M), written  # then copied in place
        assert re.search(rf"^\tcp [^\n]*build/lock/{re.escape(written)} ", lock, re.M), written
