"""A lake written before the Delta tables, converted once: `fruits migrate` (docs/operations.md, "Migrating a lake
from before the tables"). Until then the DAG refuses it (check_layout): its readers would see no
batch published, and ingest would take again photos that published batches hold.

Before the tables, a batch's newest `features/batch_id=<id>/_commits/<run>.json` was its current
version while its lease held the commit's token, and its moments lay beside its features. Migration
gives each such batch what the features job now writes: its record and moments under batch_runs/, an
empty features file when every photo was rejected (a published batch always has files in the features
table), and its files in the features and rejects tables, in one commit per table (tables.create_table:
a lake whose tables exist keeps them and takes only the batches they lack). The old commits and
moments stay in the tables' folders until a job's vacuum removes them, after the retention.
"""

import io
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from fruits.lake.leases import read_lease
from fruits.lake.storage import Storage
from fruits_jobs import commits, layout, tables

EMPTY_FEATURES_FILE = "part-00000-empty.snappy.parquet"


class OldLayout(commits.DamagedLake):
    """The lake predates the Delta tables: `fruits migrate` converts it."""


def check_layout(storage: Storage) -> None:
    """Before a run touches the lake: OldLayout when it still has to be migrated; a lake without
    commits of the old layout gets the marker, so later runs read one key, not a listing."""
    if storage.sizes(layout.LAYOUT_MARKER):
        return
    if old_commits(storage):
        raise OldLayout(
            f"{storage.name} was written before the Delta tables: run `fruits migrate --lake {storage.name}` once "
            "(docs/operations.md, 'Migrating a lake from before the tables'), then this run again"
        )
    write_marker(storage, [])


def old_commits(storage: Storage) -> dict[str, list[str]]:
    """{batch id: its runs with a commit in features/batch_id=<id>/_commits/, oldest first}."""
    found: dict[str, list[str]] = {}
    for key in storage.sizes(layout.FEATURES):
        parsed = layout.parse_commit_key(key, layout.FEATURES)
        if parsed:
            found.setdefault(parsed[0], []).append(parsed[1])
    return {batch: sorted(runs) for batch, runs in found.items()}


def live_commits(storage: Storage, found: dict[str, list[str]]) -> dict[str, dict]:
    """{batch id: its newest commit, resolved in this lake} for the batches whose newest commit its
    lease makes current (the rule before the tables: commits.is_live)."""
    live = {}
    for batch, runs in sorted(found.items()):
        key = layout.commit_path(layout.batch_folder(layout.FEATURES, batch), runs[-1])
        commit = commits.parse_commit(storage.read_text(key), storage.name + key, layout.FEATURES)
        if commits.is_live(commit, read_lease(storage, batch)):
            live[batch] = layout.resolve_record(commit, storage.name)
    return live


def key_of(storage: Storage, uri: str) -> str:
    if not uri.startswith(storage.name):
        raise commits.DamagedLake(f"{uri} is outside the lake {storage.name}: a commit copied from another lake")
    return uri[len(storage.name) :]


def empty_features(storage: Storage, batch_id: str, run_id: str) -> str:
    """A features file without rows in the run's folder (for a batch whose photos were all rejected)."""
    folder = layout.run_folder(layout.batch_folder(layout.FEATURES, batch_id), run_id)
    schema = tables.FEATURES_SCHEMA.remove(tables.FEATURES_SCHEMA.get_field_index(layout.PARTITION_COLUMN))
    buffer = io.BytesIO()
    pq.write_table(schema.empty_table(), buffer, compression="snappy")
    storage.put_bytes(buffer.getvalue(), f"{folder}/{EMPTY_FEATURES_FILE}")
    return storage.name + folder


def move_record(storage: Storage, batch_id: str, commit: dict) -> dict:
    """The batch's record (and moments) under batch_runs/, as the features job writes them now."""
    run, runs_folder = commit["run"], layout.BATCH_RUNS.rstrip("/")
    record = {k: v for k, v in commit.items() if k not in ("run", "commit")}
    if commit.get("moments"):
        moments = layout.moments_path(runs_folder, batch_id, run)
        storage.put_bytes(storage.read_bytes(key_of(storage, commit["moments"])), moments)
        record["moments"] = storage.name + moments
    if not commit.get("features"):
        record["features"] = empty_features(storage, batch_id, run)
    storage.put_bytes(commits.record_file(run, record, storage.name), layout.record_path(runs_folder, batch_id, run))
    return {**record, "run": run}


def data_files(storage: Storage, folder_uri: str, rows: int | None) -> list[tables.DataFile]:
    """(uri, size, rows) of a run folder's Parquet files; rows from the record when it is one file,
    else from each file's footer."""
    prefix = key_of(storage, folder_uri).rstrip("/") + "/"
    found = {
        key: size
        for key, size in storage.sizes(prefix).items()
        if "/" not in key[len(prefix) :] and layout.is_data_file(key[len(prefix) :])
    }
    if len(found) == 1 and rows is not None:
        ((key, size),) = found.items()
        return [(storage.name + key, size, rows)]
    with tempfile.TemporaryDirectory() as scratch:
        return [
            (storage.name + key, size, pq.read_metadata(storage.local_file(key, Path(scratch))).num_rows)
            for key, size in sorted(found.items())
        ]


def publish_tables(storage: Storage, records: dict[str, dict]) -> dict[str, int]:
    """The batches' files into the features and rejects tables, one commit per table (only the
    batches a table does not already hold at that run)."""
    options, versions = storage.delta_options(), {}
    counts = {layout.FEATURES: "featurized", layout.REJECTS: "rejected"}
    for dataset in tables.BATCH_TABLES:
        table = storage.name + dataset
        held = tables.current_runs(table, options)
        files = {
            batch: data_files(storage, record[dataset.rstrip("/")], record.get(counts[dataset]))
            for batch, record in records.items()
            if held.get(batch) != record["run"] and record.get(dataset.rstrip("/"))
        }
        if files or not tables.exists(table, options):
            metadata = {"created_from": "commits", "batches": len(files)}
            versions[dataset.rstrip("/")] = tables.create_table(
                table, tables.SCHEMAS[dataset], files, metadata, options
            )
    return versions


def write_marker(storage: Storage, batches: list[str]) -> None:
    marker = {"layout": "delta tables", "at": datetime.now(UTC).isoformat(timespec="seconds"), "migrated": batches}
    storage.put_bytes(json.dumps(marker).encode(), layout.LAYOUT_MARKER)


def migrate(storage: Storage) -> dict:
    """Convert the lake (idempotent: a second run finds the records and tables in place). Returns
    the batches migrated and the tables' versions."""
    live = live_commits(storage, old_commits(storage))
    records = {batch: move_record(storage, batch, commit) for batch, commit in live.items()}
    versions = publish_tables(storage, records)
    write_marker(storage, sorted(records))
    return {"batches": sorted(records), "table_versions": versions}


def format_report(report: dict, lake: str) -> list[str]:
    batches = report["batches"]
    return [
        f"{lake}: {len(batches)} published batch(es) now in the Delta tables"
        + (f" ({', '.join(batches)})" if batches else ""),
        *(f"  table {name}: version {version}" for name, version in sorted(report["table_versions"].items())),
    ]
