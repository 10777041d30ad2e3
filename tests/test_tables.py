"""The lake's Delta tables (fruits_jobs/tables.py, issue 27): what a consumer reads with `deltalake`
and DuckDB, with no code of this project, after the real features job published batches."""

import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from test_extract_features import run_job, two_landings

from fruits.tools import cli
from fruits_jobs import layout, tables


def batch_counts(table_path, version=None) -> dict[str, int]:
    """What a consumer runs: DuckDB SQL over the table's current (or an older) version."""
    rows = DeltaTable(str(table_path), version=version).to_pyarrow_dataset()  # noqa: F841 (DuckDB reads it by name)
    return dict(duckdb.sql("SELECT batch_id, count(*) FROM rows GROUP BY 1 ORDER BY 1").fetchall())


@pytest.fixture(scope="module")
def published(spark, tmp_path_factory):
    """Two batches, then the first again with one photo fewer and its bad file gone."""
    root = tmp_path_factory.mktemp("tables")
    two_landings(root)
    out = root / "lake"
    first = run_job(spark, root / "a", out, "day1")
    run_job(spark, root / "b", out, "day2")
    before_rerun = datetime.now(UTC)
    time.sleep(0.01)
    (root / "a" / "Kiwi" / "bad.jpg").unlink()
    (root / "a" / "Kiwi" / "2.jpg").unlink()
    rerun = run_job(spark, root / "a", out, "day1")
    return out, first, rerun, before_rerun


@pytest.mark.spark
def test_a_consumer_reads_each_published_photo_once_and_the_previous_version(published):
    out, first, rerun, _ = published
    features, rejects = out / "features", out / "rejects"
    assert batch_counts(features) == {"day1": 2, "day2": 2}  # a bare Parquet listing holds 3 runs of day1
    assert batch_counts(rejects) == {}  # the re-run had no reject: the batch's old rejects are gone
    table = DeltaTable(str(features))
    assert batch_counts(features, table.version() - 1) == {"day1": 3, "day2": 2}  # before the re-run
    assert batch_counts(rejects, DeltaTable(str(rejects)).version() - 1) == {"day1": 1}
    assert table.history(1)[0]["run"] == rerun["run"]  # the commit names its run
    paths = DeltaTable(str(features)).to_pyarrow_table(columns=["path"]).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 4
    stats = table.get_add_actions(flatten=True).column("num_records").to_pylist()
    assert sum(stats) == 4  # each file carries its row count


@pytest.mark.spark
def test_a_table_s_folder_holds_only_files_its_log_lists_and_the_side_files_live_outside(published):
    """Point 2: the Delta log is where publishing happens, and a full vacuum deletes whatever a table's
    folder holds that its log does not list, so nothing else lives there: the run's record and moments
    are under batch_runs/, named by the run= folder of the batch's current files."""
    out, _, rerun, _ = published
    for name in ("features", "rejects"):
        table = DeltaTable(str(out / name))
        listed = {
            Path(uri).relative_to(out / name).as_posix()
            for version in range(table.version() + 1)
            for uri in DeltaTable(str(out / name), version=version).file_uris()
        }
        on_disk = {
            p.relative_to(out / name).as_posix()
            for p in (out / name).rglob("*")
            if p.is_file() and "_delta_log" not in p.parts and not p.name.startswith(".") and p.name != "_SUCCESS"
        }
        assert on_disk == listed, name  # every version's files (time travel), nothing else
    runs = tables.current_runs(str(out / "features"))
    assert set(runs) == {"day1", "day2"} and runs["day1"] == rerun["run"]
    record = out / "batch_runs" / "batch_id=day1" / f"{rerun['run']}.json"
    assert record.is_file() and (out / "batch_runs" / "batch_id=day1" / f"{rerun['run']}.moments.npz").is_file()


@pytest.mark.spark
def test_fruits_sql_answers_from_the_current_tables_and_as_of_a_time(published, capsys):
    out, _, _, before_rerun = published
    query = "SELECT batch_id, count(*) AS photos FROM features GROUP BY 1 ORDER BY 1"
    assert cli.main(["--lake", str(out), "sql", query]) == 0
    assert capsys.readouterr().out.splitlines() == ["batch_id\tphotos", "day1\t2", "day2\t2"]
    assert cli.main(["--lake", str(out), "sql", query, "--as-of", before_rerun.isoformat()]) == 0
    assert capsys.readouterr().out.splitlines() == ["batch_id\tphotos", "day1\t3", "day2\t2"]
    assert (
        cli.main(["--lake", str(out), "sql", "SELECT count(*) FROM rejects", "--as-of", before_rerun.isoformat()]) == 0
    )
    assert capsys.readouterr().out.splitlines()[1] == "1"
    assert cli.main(["--lake", str(out), "sql", "SELEC count(*) FROM features"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ['fruits sql: Parser Error: syntax error at or near "SELEC"']
    assert cli.main(["--lake", str(out), "sql", "SELECT 1", "--as-of", "2001-01-01"]) == 2
    assert "did not exist yet" in capsys.readouterr().err
    assert cli.main(["--lake", str(out), "sql", "SELECT 1", "--as-of", "last monday"]) == 2
    assert "ISO 8601" in capsys.readouterr().err


@pytest.mark.spark
def test_a_copied_lake_reads_the_same_with_the_original_moved_away(published, tmp_path):
    out = published[0]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    moved = out.with_name(out.name + "-moved")
    out.rename(moved)
    try:
        assert batch_counts(copy / "features") == {"day1": 2, "day2": 2}
        assert all(uri.startswith(str(copy)) for uri in DeltaTable(str(copy / "features")).file_uris())
    finally:
        moved.rename(out)


@pytest.mark.spark
def test_spark_s_files_have_the_tables_columns(published):
    """The declared schemas are the contract with what Spark writes (the partition column aside)."""
    for dataset, schema in tables.SCHEMAS.items():
        files = sorted((published[0] / dataset.rstrip("/")).rglob("part-*.parquet"))
        assert files, dataset
        written = pq.read_schema(files[0])
        declared = schema.remove(schema.get_field_index(layout.PARTITION_COLUMN))
        assert written.names == declared.names
        for field in declared:
            got = written.field(field.name).type
            assert got == field.type or (pa.types.is_list(got) and got.value_type == field.type.value_type), field


def write_part(table, batch_id, run, rows):
    folder = table / f"{layout.PARTITION_COLUMN}={batch_id}" / f"run={run}"
    folder.mkdir(parents=True)
    data = pa.table(
        {
            "path": [f"{batch_id}/{i}.jpg" for i in range(rows)],
            "reason": ["truncated"] * rows,
            "detail": [None] * rows,
            "label": ["Kiwi"] * rows,
            "split": ["Training"] * rows,
        },
        schema=tables.REJECTS_SCHEMA.remove(tables.REJECTS_SCHEMA.get_field_index(layout.PARTITION_COLUMN)),
    )
    pq.write_table(data, folder / "part-00000.parquet")
    return [f"file:{folder}/part-00000.parquet"]


def test_writers_racing_on_one_table_each_land_their_batch_once(tmp_path):
    table = tmp_path / "rejects"
    files = {f"b{i}": write_part(table, f"b{i}", "r1", i + 1) for i in range(6)}
    errors = []

    def publish(batch_id):
        try:
            tables.publish_batch(str(table), tables.REJECTS_SCHEMA, batch_id, files[batch_id], {"run": "r1"})
        except Exception as exc:  # noqa: BLE001 (the assertion below names it)
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(b,)) for b in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert batch_counts(table) == {f"b{i}": i + 1 for i in range(6)}


def test_a_file_outside_the_table_is_refused_naming_it(tmp_path):
    outside = write_part(tmp_path / "elsewhere", "b1", "r1", 1)
    with pytest.raises(ValueError, match="not inside the table"):
        tables.publish_batch(str(tmp_path / "rejects"), tables.REJECTS_SCHEMA, "b1", outside, {})


@pytest.mark.spark
def test_a_run_whose_lease_was_revoked_publishes_nothing_to_the_tables(published, spark, tmp_path):
    """The lease rule holds for the tables too: a run given up on (its token no longer the lease's)
    leaves the tables as they were, though its files and commit exist."""
    import json

    from fruits_jobs import features

    out = tmp_path / "lake"
    shutil.copytree(published[0], out)
    lease = out / layout.lease_key("day1")
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.write_text(json.dumps({"token": None, "revoked": "given up"}))
    version = DeltaTable(str(out / "features")).version()
    args = features.parse_args(
        ["--images", str(tmp_path), "--features", str(out / "features"), "--rejects", str(out / "rejects")]
        + ["--batch-id", "day1", "--weights", "random", "--lease", str(lease)]
    )
    first = published[1]  # day1's first run: its folders are kept (the previous version)
    folder = str(out / "features" / "batch_id=day1" / f"run={first['run']}")
    tables_uris = {layout.REJECTS: str(out / "rejects"), layout.FEATURES: str(out / "features")}
    summary = {**first, "token": "t1"}
    assert features.publish_tables(spark, args, tables_uris, [{**summary, "features": folder, "rejects": None}]) is None
    assert DeltaTable(str(out / "features")).version() == version
    assert batch_counts(out / "features") == {"day1": 2, "day2": 2}
    lease.write_text(json.dumps({"token": "t1"}))  # the same call while the lease holds its token: published
    assert features.publish_tables(spark, args, tables_uris, [{**summary, "features": folder, "rejects": None}])
    assert batch_counts(out / "features") == {"day1": 3, "day2": 2}


def test_delta_rs_publishes_and_reads_on_s3_through_moto_s_server(tmp_path, monkeypatch):
    """delta-rs talks to S3 itself, not through boto3, so it meets a real HTTP server (moto's, which
    honours If-None-Match): a batch published, then re-published, reads once."""
    import io

    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL": endpoint,
        }.items():
            monkeypatch.setenv(name, value)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1")
        s3.create_bucket(Bucket="fruits-t", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        schema = tables.REJECTS_SCHEMA.remove(tables.REJECTS_SCHEMA.get_field_index(layout.PARTITION_COLUMN))
        for run, rows in (("r1", 3), ("r2", 2)):
            sink = io.BytesIO()
            data = {"path": [f"{i}.jpg" for i in range(rows)], "reason": ["truncated"] * rows}
            pq.write_table(
                pa.table(
                    {**data, "detail": [None] * rows, "label": ["a"] * rows, "split": ["T"] * rows}, schema=schema
                ),
                sink,
            )
            key = f"rejects/batch_id=b1/run={run}/part-00000.parquet"
            s3.put_object(Bucket="fruits-t", Key=key, Body=sink.getvalue())
            tables.publish_batch("s3a://fruits-t/rejects", tables.REJECTS_SCHEMA, "b1", [f"s3://fruits-t/{key}"], {})
        table = DeltaTable("s3://fruits-t/rejects", storage_options=tables.storage_options("s3://fruits-t/rejects"))
        assert (table.version(), table.to_pyarrow_table().num_rows) == (1, 2)
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="fruits-t", Prefix="rejects/_delta_log/")["Contents"]}
        assert keys == {"rejects/_delta_log/00000000000000000000.json", "rejects/_delta_log/00000000000000000001.json"}
    finally:
        server.stop()


@pytest.mark.spark
def test_the_readme_s_reading_snippet_runs_as_written(published):
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    snippet = readme.split("<!-- read-the-lake -->")[1].split("```python")[1].split("```")[0]
    scope = {"LAKE": str(published[0])}
    exec(snippet, scope)  # noqa: S102 - the README's own code, as a reader would run it
    assert scope["per_batch"] == [("day1", 2), ("day2", 2)]
    assert len(scope["frame"]) == 4 and scope["frame"]["path"].is_unique
    assert len(scope["before"]) == 5  # the version before the re-run of day1


@pytest.mark.spark
def test_fruits_check_names_a_missing_data_file_and_a_rerun_mends_it(published, spark, tmp_path, capsys):
    """A data file the current version names, gone: every reader of the table fails on it. `fruits
    check` names it and the batch to re-run; the re-run replaces the batch's partition."""
    out = tmp_path / "lake"
    shutil.copytree(published[0], out)
    table = DeltaTable(str(out / "features"))
    victim = next(uri for uri in table.file_uris() if "batch_id=day2" in uri)
    Path(victim).unlink()
    assert cli.main(["--lake", str(out), "check"]) == 1
    printed = capsys.readouterr().out
    assert f"table features: {victim} is missing" in printed and "re-run batch day2" in printed
    run_job(spark, published[0].parent / "b", out, "day2")  # what the rerun param runs
    assert cli.main(["--lake", str(out), "check"]) == 0
    assert batch_counts(out / "features") == {"day1": 2, "day2": 2}


@pytest.mark.spark
def test_fruits_check_names_a_damaged_delta_log_entry(published, tmp_path, capsys):
    out = tmp_path / "lake"
    shutil.copytree(published[0], out)
    newest = sorted((out / "rejects" / "_delta_log").glob("*.json"))[-1]
    newest.write_text('{"add": {"path": ')  # half-written by hand, or damaged
    assert cli.main(["--lake", str(out), "check"]) == 1
    printed = capsys.readouterr().out
    assert f"table rejects: its Delta log {out}/rejects/_delta_log/ cannot be read" in printed
    assert f"newest entry {out}/rejects/_delta_log/{newest.name}" in printed and "Repairing a Delta log" in printed


def test_publishing_the_same_files_again_changes_nothing(tmp_path):
    """A retried publish (the same run's files) is a no-op, not Delta's "add and remove the same path"."""
    table = tmp_path / "rejects"
    files = write_part(table, "b1", "r1", 2)
    first = tables.publish_batch(str(table), tables.REJECTS_SCHEMA, "b1", files, {})
    assert tables.publish_batch(str(table), tables.REJECTS_SCHEMA, "b1", files, {}) == first
    assert batch_counts(table) == {"b1": 2}


def test_a_commit_under_an_older_lease_generation_is_refused_by_the_log(tmp_path):
    """Fencing in the log itself (issue 27, point 3): the batch's lease generation is a Delta
    transaction version. A writer whose snapshot predates a newer generation's commit is refused by
    delta-rs; one whose snapshot shows it is refused before committing."""
    from deltalake.exceptions import CommitFailedError

    table = tmp_path / "rejects"
    tables.publish_batch(str(table), tables.REJECTS_SCHEMA, "b1", write_part(table, "b1", "r1", 1), {}, generation=1)
    stale = DeltaTable(str(table))  # the job's snapshot, read while its generation (1) was current
    tables.fence_table(str(table), tables.REJECTS_SCHEMA, "b1", 2, {"lease": "revoked"})  # the revoke, mid-commit
    assert DeltaTable(str(table)).transaction_version(tables.lease_app_id("b1")) == 2
    late = tables.add_actions(str(table), {"batch_id": "b1"}, tables.parquet_files(write_part(table, "b1", "r2", 3)))
    with pytest.raises(CommitFailedError, match="Concurrent transaction"):
        tables.commit_actions(stale, [], late, ["batch_id"], {}, (tables.lease_app_id("b1"), 1))
    with pytest.raises(tables.GivenUp, match="generation 2 in the table's log, this run started under 1"):
        tables.publish_batch(str(table), tables.REJECTS_SCHEMA, "b1", write_part(table, "b1", "r3", 2), {}, 1)
    assert batch_counts(table) == {"b1": 1}  # neither landed
    tables.publish_batch(str(table), tables.REJECTS_SCHEMA, "b1", write_part(table, "b1", "r4", 4), {}, 2)
    assert batch_counts(table) == {"b1": 4}  # the new generation's run publishes


@pytest.mark.spark
def test_a_revoke_is_recorded_in_the_tables_logs_and_a_run_it_overtook_publishes_nothing(published, spark, tmp_path):
    """The lease file and the log agree: leases.issue/revoke give each new lease the next generation
    and fence both tables with it; a run that saw its lease live just before still cannot commit."""
    import json

    from fruits.lake import leases
    from fruits.lake.storage import LocalStorage
    from fruits_jobs import features

    out = tmp_path / "lake"
    shutil.copytree(published[0], out)
    storage = LocalStorage(out)
    token = leases.issue(storage, "day1")  # generation 1: no earlier lease, nothing to fence
    lease = json.loads((out / layout.lease_key("day1")).read_text())
    assert (lease["token"], lease["generation"]) == (token, 1)
    leases.issue(storage, "day1")  # a new run's lease: generation 2, in both logs
    for name in ("features", "rejects"):
        assert DeltaTable(str(out / name)).transaction_version(tables.lease_app_id("day1")) == 2
    leases.revoke(storage, "day1", "test")
    assert json.loads((out / layout.lease_key("day1")).read_text())["generation"] == 3
    assert DeltaTable(str(out / "features")).transaction_version(tables.lease_app_id("day1")) == 3
    # A run of generation 2 that read its lease live (the file says so again) commits after the revoke.
    (out / layout.lease_key("day1")).write_text(json.dumps({"token": "t2", "generation": 2}))
    first = published[1]
    args = features.parse_args(
        ["--images", str(tmp_path), "--features", str(out / "features"), "--rejects", str(out / "rejects")]
        + ["--batch-id", "day1", "--weights", "random", "--lease", str(out / layout.lease_key("day1"))]
    )
    folder = str(out / "features" / "batch_id=day1" / f"run={first['run']}")
    uris = {layout.REJECTS: str(out / "rejects"), layout.FEATURES: str(out / "features")}
    summary = {**first, "token": "t2", "lease_generation": 2}
    assert features.publish_tables(spark, args, uris, [{**summary, "features": folder, "rejects": None}]) is None
    assert batch_counts(out / "features") == {"day1": 2, "day2": 2}  # still the re-run's rows
