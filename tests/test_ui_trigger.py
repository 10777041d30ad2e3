"""The manual trigger from the Airflow UI, in a real (headless) browser, as a person would do it.

Starts Airflow's api-server, scheduler and dag-processor on loopback (SQLite, LocalExecutor, an
isolated AIRFLOW_HOME, free ports), opens the UI in Debian's Chromium through Selenium, logs in,
opens `fruits_pipeline`, fills the trigger form (backend local, the demo photos, a PCA variance
target, random weights), submits, watches the run until it succeeds (the real Spark jobs, local[*]),
then reads the run's summary (counts, k, explained variance) in publish_summary's log and XCom.
Screenshots of every step, the Airflow components' logs and the task logs land in artifacts/ui/.

    .ci/install_browser.sh && pytest -m ui tests/test_ui_trigger.py

Skips, with the reason, when chromium / chromium-driver / selenium are missing.
"""

import json
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import seed_models
from ui.browser import missing_reason

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("FRUITS_UI_ARTIFACTS", REPO / "artifacts" / "ui"))
DAG_ID = "fruits_pipeline"
PCA_VARIANCE = 0.9
RUN_TIMEOUT_S = 240

pytestmark = [
    pytest.mark.ui,
    pytest.mark.timeout(420),
    pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason())),
]


def make_demo_images(out: Path) -> None:
    """The deterministic demo set, 3 per class (+ its odd files): the Spark time is mostly start-up."""
    from fruits.tools.demo_images import generate

    generate(out, per_class=3)


def photos_ingest_would_send(landing: Path) -> int:
    """How many landing files the pipeline reads: what ingest uploads (its own skip rules)."""
    from fruits.lake.ingest import skip_reason

    return sum(1 for p in landing.rglob("*") if p.is_file() and skip_reason(p.relative_to(landing)) is None)


@pytest.fixture
def artifacts():
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture
def stack(tmp_path, artifacts, random_export):
    from fruits.tools.local_airflow import AirflowStack

    # Not `airflow standalone`: it misses a dead component (fail_fast checks each) and its stop may hang.
    lake = tmp_path / "lake"
    seed_models(lake, random_export)
    stack = AirflowStack(
        tmp_path / "airflow_home",
        artifacts / "airflow",
        extra_env={
            "FRUITS_LOCAL_LAKE": str(lake),
            # The form's default backend is then emr: the test must pick `local` itself, as a person would.
            "FRUITS_BACKEND": "emr",
            # Where a run with an empty landing_dir would look: empty, never the developer's ./data.
            "FRUITS_LANDING_DIR": str(tmp_path / "no-landing"),
        },
    )
    (tmp_path / "no-landing").mkdir()
    try:
        stack.start()
        stack.wait_healthy(150)
        stack.wait_dag(DAG_ID, 120)
        yield stack
    finally:
        stack.stop()
        if (stack.home / "logs").is_dir():
            shutil.copytree(stack.home / "logs", artifacts / "airflow" / "task-logs", dirs_exist_ok=True)


@pytest.fixture
def browser(artifacts):
    from ui.browser import Browser

    b = Browser(artifacts)
    try:
        yield b
    finally:
        b.close()


def test_trigger_from_the_ui_and_read_the_summary(stack, browser, tmp_path):
    from ui.airflow_ui import AirflowUI

    t0 = time.monotonic()
    landing = tmp_path / "landing"
    landing.mkdir()
    make_demo_images(landing)
    expected_read = photos_ingest_would_send(landing)
    batch_id = f"ui-{int(time.time())}"

    ui = AirflowUI(browser, stack.url)
    ui.login(stack.username, stack.password)
    ui.open_dag(DAG_ID)
    run_id = ui.trigger_with_params(
        text_params={
            "batch_id": batch_id,
            "landing_dir": str(landing),
            "pca_variance": str(PCA_VARIANCE),
            "weights": "random",
        },
        select_params={"backend": "local"},
    )

    # The form as it opened: no field shown invalid, the EMR-only fields in their own section, the
    # batch-id rule in words.
    assert ui.form_invalid == [], ui.form_invalid
    assert "EMR cluster (backend emr only)" in ui.form_text, ui.form_text
    assert ui.select_options["backend"] == ["emr", "emr_serverless", "local"], ui.select_options
    assert "letters, digits" in ui.form_text

    # The run the UI created carries the form's values.
    token = stack.token()
    run = stack.api(f"dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}", token)
    assert run["run_type"] == "manual"
    for key, value in {
        "batch_id": batch_id,
        "landing_dir": str(landing),
        "backend": "local",
        "weights": "random",
        "pca_variance": PCA_VARIANCE,
        "pca_k": None,
    }.items():
        assert run["conf"].get(key) == value, f"conf[{key!r}] = {run['conf'].get(key)!r}, expected {value!r}"

    def fail_fast():
        """The components are alive, and no task failed: the DAG retries after minutes, the test won't wait."""
        stack.check_alive()
        bad = {
            t: s
            for t, s in stack.task_states(DAG_ID, run_id, token).items()
            if s in ("failed", "up_for_retry", "upstream_failed")
        }
        if bad:
            browser.shot("task-failed")
            pytest.fail(f"run {run_id}: tasks {bad}; their logs:\n" + stack.task_log_tails(DAG_ID, run_id, set(bad)))

    state = ui.wait_run_finished(RUN_TIMEOUT_S, on_poll=fail_fast)
    assert state == "Success", f"run {run_id} ended {state}; task logs:\n" + stack.task_log_tails(DAG_ID, run_id)

    # The summary, where a person finds it: publish_summary's log, then its XCom.
    ui.open_task(run_id, "publish_summary")
    log = ui.task_log_text("explained variance")
    counts = re.search(r"(\d+) read, (\d+) featurized, (\d+) rejected", log)
    pca = re.search(r"k=(\d+) of (\d+) dims, explained variance ([0-9.]+)", log)
    assert counts and pca, f"no summary lines in the log shown:\n{log[-3000:]}"
    read, featurized, rejected = map(int, counts.groups())
    k, dims, variance = int(pca.group(1)), int(pca.group(2)), float(pca.group(3))
    assert read == expected_read and read == featurized + rejected, (read, featurized, rejected, expected_read)
    assert 1 <= k <= min(featurized, dims)
    assert variance >= PCA_VARIANCE - 1e-3, variance

    ui.xcom_text(["images", "pca", "locations"])
    # The same numbers behind the UI's XCom view.
    xcom_pca = stack.api(
        f"dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/publish_summary/xcomEntries/pca", token
    )["value"]
    xcom_pca = json.loads(xcom_pca) if isinstance(xcom_pca, str) else xcom_pca
    assert xcom_pca["k"] == k
    assert abs(xcom_pca["total_explained_variance"] - variance) < 1e-3

    elapsed = time.monotonic() - t0
    (ARTIFACTS / "summary.json").write_text(
        json.dumps(
            {
                "run_id": run_id,
                "batch_id": batch_id,
                "read": read,
                "featurized": featurized,
                "rejected": rejected,
                "k": k,
                "explained_variance": variance,
                "test_seconds": round(elapsed, 1),
            },
            indent=1,
        )
    )
