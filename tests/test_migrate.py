"""Issue 27, point 8: a lake written by main before the Delta tables is converted once (`fruits
migrate`), and runs and reads as a lake of the tables from then on. The lake is written by that
commit's own jobs (tests/fixtures/lake_before_tables.py), taken from this clone's history."""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from deltalake import DeltaTable

from fruits.lake import migrate, published
from fruits.lake.storage import LocalStorage
from fruits.tools import cli
from fruits_jobs import pca, tables

from conftest import make_jpeg

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "lake_before_tables.py"
PRE_TABLES_COMMIT = "1e67241"  # the fixture's, by name (it imports that commit's jobs)

pytestmark = pytest.mark.spark


def old_jobs(into: Path) -> Path:
    """That commit's spark_jobs/, from git; skips when this clone has no such history (a shallow one)."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", PRE_TABLES_COMMIT, "spark_jobs"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"main before the tables ({PRE_TABLES_COMMIT}) is not in this clone's history: {exc}")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "spark_jobs"


@pytest.fixture(scope="module")
def old_lake(tmp_path_factory) -> Path:
    """A lake as main wrote it before the tables (see the fixture's docstring for its batches)."""
    root = tmp_path_factory.mktemp("before-tables")
    jobs = old_jobs(root / "code")
    env = {**os.environ, "PYTHONPATH": str(jobs), "PYSPARK_PYTHON": sys.executable}
    subprocess.run(
        [sys.executable, str(FIXTURE), str(root / "lake"), str(root / "landing")],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return root / "lake"


def batch_counts(table: Path) -> dict[str, int]:
    rows = DeltaTable(str(table)).to_pyarrow_table(columns=["batch_id"]).column("batch_id").to_pylist()
    return {batch: rows.count(batch) for batch in sorted(set(rows))}


def test_a_lake_from_before_the_tables_is_refused_until_migrated_then_reads_and_runs(old_lake, spark, tmp_path, capsys):
    import shutil

    lake = tmp_path / "lake"
    shutil.copytree(old_lake, lake)
    storage = LocalStorage(lake)
    old_commits = sorted(p.relative_to(lake) for p in lake.glob("features/batch_id=*/_commits/*.json"))
    # The DAG's first task refuses it, naming the command: its readers would see nothing published.
    with pytest.raises(migrate.OldLayout, match=rf"fruits migrate --lake {lake}/"):
        migrate.check_layout(storage)

    assert cli.main(["--lake", str(lake), "migrate"]) == 0
    said = capsys.readouterr().out
    assert "3 published batch(es) now in the Delta tables (day1, day2, day3)" in said  # day4: given up
    migrate.check_layout(storage)  # the marker: one key read from now on
    # day1's newest commit (its re-run), day2, and day3 whose photos were all rejected (an empty file)
    newest = {p.parts[1].split("=")[1]: p.stem for p in old_commits}
    assert published.published_runs(storage) == {b: newest[b] for b in ("day1", "day2", "day3")}
    assert batch_counts(lake / "features") == {"day1": 2, "day2": 2}
    assert batch_counts(lake / "rejects") == {"day1": 1, "day3": 1}
    record = published.published_record(storage, "day1")
    assert (record["featurized"], record["rejected"]) == (2, 1)
    assert Path(record["moments"]) == lake / "batch_runs" / "batch_id=day1" / f"{newest['day1']}.moments.npz"
    assert Path(record["moments"]).is_file()
    assert cli.main(["--lake", str(lake), "check"]) == 0
    capsys.readouterr()

    # Migrating again changes nothing.
    versions = {t: DeltaTable(str(lake / t)).version() for t in ("features", "rejects")}
    assert cli.main(["--lake", str(lake), "migrate"]) == 0
    assert {t: DeltaTable(str(lake / t)).version() for t in ("features", "rejects")} == versions

    # The next day runs on it: the PCA keeps the old space (its commit, state and model are as they
    # were) and the vectors table starts whole; a new batch publishes beside the migrated ones.
    from test_extract_features import run_job

    for i in range(2):
        make_jpeg(tmp_path / "land" / "Fig" / f"{i}.jpg", (30, 100 + 50 * i, 90))
    run_job(spark, tmp_path / "land", lake, "day5", retention_hours=0)
    metrics = pca.run(
        spark,
        pca.parse_args(["--features", str(lake / "features"), "--output", str(lake / "pca"), "--k", "2"]),
    )
    assert metrics["added"] == ["day1", "day2", "day3", "day5"] or metrics["new_space"]
    assert batch_counts(lake / "features") == {"day1": 2, "day2": 2, "day5": 2}
    rows = DeltaTable(str(lake / "vectors")).to_pyarrow_table(columns=["batch_id", "path"]).to_pylist()
    assert sorted({r["batch_id"] for r in rows}) == ["day1", "day2", "day5"] and len(rows) == 6
    # Retention 0 (the features job's vacuum): the old layout's commits and moments left the tables'
    # folders, and only files a table lists stay there.
    assert not list(lake.glob("features/batch_id=*/_commits/*")) and not list(lake.glob("features/**/_moments.npz"))
    listed = {
        Path(uri).relative_to(lake / "features").as_posix() for uri in DeltaTable(str(lake / "features")).file_uris()
    }
    on_disk = {
        p.relative_to(lake / "features").as_posix()
        for p in (lake / "features").rglob("*")
        if p.is_file() and not p.name.startswith(".") and not {"_delta_log", "_progress", "_staging"} & set(p.parts)
    }  # the old layout's features/_progress/ and _staging/: `_` folders, which Delta and its vacuum skip
    assert on_disk - {f for f in on_disk if f.endswith("_SUCCESS")} == listed
    assert cli.main(["--lake", str(lake), "check"]) == 0


def test_the_layout_marker_is_written_once_for_a_lake_without_old_commits(tmp_path):
    storage = LocalStorage(tmp_path / "lake")
    migrate.check_layout(storage)
    marker = json.loads((tmp_path / "lake" / "batch_runs" / "_layout.json").read_text())
    assert marker["layout"] == "delta tables" and marker["migrated"] == []
    assert tables.current_runs(str(tmp_path / "lake" / "features")) == {}
