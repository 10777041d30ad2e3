"""fruits_jobs/contract.py is the one definition both sides follow: the DAG's params, ingest, the
Spark jobs and the README agree with it (the rules where two copies used to disagree included)."""

import ast
import re
import sys
from pathlib import Path

import pytest

from fruits.config import params, settings
from fruits.config.params import InvalidParam
from fruits.lake import ingest
from fruits_jobs import contract
from fruits_jobs.common import UsageError, check_batch_id

from airflow_fixtures import REPO

PIPELINE_DOC = (REPO / "docs" / "pipeline.md").read_text()  # the settings table (moved from the README)
JOBS_DOC = (REPO / "docs" / "spark-jobs.md").read_text()  # the reject reasons


@pytest.mark.parametrize("module", ["contract.py", "layout.py"])
def test_the_rules_both_sides_share_import_only_the_standard_library(module):
    """The DAG imports them at parse time, and the jobs ship them to clusters that have nothing else."""
    tree = ast.parse((REPO / "spark_jobs" / "fruits_jobs" / module).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported and imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names


@pytest.mark.parametrize(
    "batch_id,ok",
    [
        ("2026-01-01", True),
        ("a" * 64, True),
        ("v1.2_x-3", True),
        ("2026-01-01\n", False),  # '$' lets a trailing newline through; the rule does not
        ("a" * 65, False),  # the job allowed 128, the DAG 64: the stricter wins on both sides
        ("_hidden", False),
        (".hidden", False),
        ("a/b", False),
        ("", False),
        (None, False),
    ],
)
def test_one_batch_id_rule_for_the_dag_and_the_job(batch_id, ok):
    assert contract.is_valid_batch_id(batch_id) is ok
    conf = {k: v.value for k, v in params.build_params().items()}
    if ok:
        assert params.validate({**conf, "batch_id": batch_id})["batch_id"] == batch_id
        assert check_batch_id(batch_id) == batch_id
    else:
        if batch_id not in (None, ""):  # None and "" are the param's "use the run's date"
            with pytest.raises(InvalidParam, match="'batch_id'"):
                params.validate({**conf, "batch_id": batch_id})
        with pytest.raises(UsageError, match="--batch-id"):
            check_batch_id(batch_id)


def test_the_form_uses_the_contract_pattern_and_it_agrees_with_python():
    assert params.build_params()["batch_id"].schema["pattern"] == contract.BATCH_ID_SCHEMA_PATTERN
    pattern = re.compile(contract.BATCH_ID_SCHEMA_PATTERN)
    for value in ("b1", "x" * 64, "x" * 65, "a/b", "_x"):
        assert bool(pattern.search(value)) == contract.is_valid_batch_id(value), value


@pytest.mark.parametrize(
    "rel",
    [
        "Banana/1.jpg",
        "Training/Banana/1.jpg",
        "Test/Cherry 1/1.jpg",
        "1.jpg",
        "Training/1.jpg",
        "Training/Banana/sub/1.jpg",
        "Training/Test/1.jpg",
        "Mixed/Training/Banana/1.jpg",
    ],
)
def test_ingest_and_the_features_job_read_labels_the_same_way(spark, rel):
    from fruits_jobs.features import path_columns

    root = "file:/landing"
    row = spark.createDataFrame([(f"{root}/{rel}",)], "path string").select(*path_columns(root)).first()
    expected = contract.label_and_split(Path(rel).parts)
    assert (None if row["label"] is None else (row["label"], row["split"])) == expected
    assert (ingest.skip_reason(Path(rel)) is None) == (expected is not None)


def test_ingest_never_uploads_a_name_the_job_would_count_as_hidden():
    for name in ("_DSC0001.jpg", ".DS_Store", "._1.jpg", "1.jpg._COPYING_", ".ipynb_checkpoints"):
        assert contract.spark_skips_name(name)
        assert ingest.skip_reason(Path("Banana") / name) is not None
    for name in ("_metadata.jpg", "_season=2024", "1.jpg"):  # Spark reads these
        assert not contract.spark_skips_name(name)


def test_the_readme_lists_every_reject_reason_with_its_meaning():
    section = JOBS_DOC[JOBS_DOC.index("<!-- reject-reasons -->") : JOBS_DOC.index("<!-- /reject-reasons -->")]
    listed = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", section, re.M))
    assert listed == contract.REJECT_REASONS


def test_the_docs_settings_table_is_the_settings_module():
    section = PIPELINE_DOC[PIPELINE_DOC.index("<!-- settings -->") : PIPELINE_DOC.index("<!-- /settings -->")]
    assert settings.describe() in section


def test_an_unknown_reject_reason_fails_loudly():
    with pytest.raises(KeyError, match="unknown reject reason"):
        contract.reject_reason("blurry")
