"""Runs, records and commits: how a run's outputs become current as one unit.

Each run of a job writes into folders of its own that nobody reads yet, then makes them current
with ONE switch:
- a features run: its record (`batch_runs/batch_id=<id>/<run>.json`: counts, inputs, weights, its
  moments beside it), written first and never changed after, then the rejects table's commit, then
  the features table's (tables.py): the features table's log is the publication point, and the run=
  folder of a batch's current files there names its run, hence its record (read_record);
- a PCA run: its record (`pca/spaces/<space>/runs/<run>/metrics.json`), then the vectors table's
  commit, the publication point, which adds files under the run's own folders only: the newest run
  among the table's current files names the space's record (read_space).
Records are written under a hidden name and renamed, so they appear whole.

Run ids start with the UTC time, so "newest" is the largest id. Readers go through the tables
(`tables.current_files`, `read_record`, `read_current`, `read_space`), never through a listing of run folders, which
also hold runs that are not (or no longer) current.

Fencing: a batch's lease (layout.lease_key), which each run's ingest issues, carries a generation
that the tables' logs record (leases.fence_tables); a features run commits only under the generation
it started with (tables.commit_actions), so a run the orchestrator gave up on never publishes.
"""

import json
import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from fruits_jobs import hadoop_fs, layout, tables

log = logging.getLogger(__name__)

# What a reader needs of a commit, by dataset: a commit without them is damaged, never skipped.
REQUIRED_KEYS = {layout.FEATURES: ("features",), layout.PCA: ("space", "model", "metrics", "vectors", "k")}


class DamagedLake(ValueError):
    """A lake file is not what its name says; the message names the file and what to do."""


def parse_record(text: str, where: str, required: Iterable[str], fix: str) -> dict:
    """A commit's or a manifest's JSON, or DamagedLake naming the file, what is wrong and `fix`."""
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise DamagedLake(f"{where} is damaged (not JSON: {exc}); {fix}") from None
    missing = [key for key in required if not isinstance(record, dict) or key not in record]
    if missing:
        raise DamagedLake(f"{where} is damaged (no {', '.join(missing)}); {fix}")
    return record


def parse_commit(text: str, where: str, dataset: str) -> dict:
    fix = (
        "move it out of its _commits/ folder (the previous commit, if any, becomes current) "
        "or re-run the batch (docs/operations.md, 'Repair')"
    )
    return parse_record(text, where, REQUIRED_KEYS.get(dataset, ()), fix)


def parse_batch_record(text: str | None, where: str, batch_id: str, run_id: str) -> dict:
    """A batch's run record (text None: the file is missing), or DamagedLake naming it and the fix."""
    fix = f"re-run batch {batch_id} (docs/operations.md, 'Repair')"
    if text is None:
        raise DamagedLake(f"{where} is missing (the features table names run {run_id} of batch {batch_id}); {fix}")
    return parse_record(text, where, REQUIRED_KEYS[layout.FEATURES], fix)


def parse_space_record(text: str | None, where: str, space: str, run_id: str) -> dict:
    """A PCA run's record, its metrics.json (text None: missing), or DamagedLake naming it and the fix."""
    fix = "run the PCA with pca_refit=always (a new space from every published batch)"
    if text is None:
        raise DamagedLake(f"{where} is missing (the vectors table names run {run_id} of space {space}); {fix}")
    return parse_record(text, where, REQUIRED_KEYS[layout.PCA], fix)


def new_run_id(now: datetime | None = None) -> str:
    """Sortable by time (to the millisecond), unique by its random tail."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%S')}{now.microsecond // 1000:03d}Z-{uuid.uuid4().hex[:8]}"


def retention_cutoff(retention_hours: float, now: datetime | None = None) -> str:
    """The run id before which a run's side files may go: older than the tables' retention."""
    return new_run_id((now or datetime.now(UTC)) - timedelta(hours=retention_hours))[: len("YYYYmmddTHHMMSSfffZ")]


def is_live(commit: dict, lease: dict | None) -> bool:
    """A commit publishes its batch while its token is the lease's. No lease: a lake written before
    leases, whose commits carry no token either."""
    if lease is None:
        return commit.get("token") is None
    return lease.get("token") is not None and commit.get("token") == lease["token"]


def read_lease(spark, lease_uri: str) -> dict | None:
    return json.loads(hadoop_fs.read_text(spark, lease_uri)) if hadoop_fs.exists(spark, lease_uri) else None


def read_space(spark, pca_uri: str) -> dict | None:
    """The current space's record, or None when the lake has none yet: the vectors table's newest run
    (tables.current_space) names it, pca/spaces/<space>/runs/<run>/metrics.json, its references
    resolved in this lake, with where it is ("record") and the table's vectors folders ("vectors");
    DamagedLake naming the file when it is missing or cannot be read."""
    found = tables.current_space(layout.vectors_table(pca_uri))
    if found is None:
        return None
    space, run, folders = found
    path = layout.space_record_path(pca_uri, space, run)
    text = hadoop_fs.read_text(spark, path) if hadoop_fs.exists(spark, path) else None
    record = parse_space_record(text, path, space, run)
    root = layout.root_of_batch_folder(pca_uri)
    return {**(layout.resolve_record(record, root) if root else record), "record": path, "vectors": folders}


def record_file(run_id: str, record: dict, root: str | None) -> bytes:
    """A run record's bytes: the record, its references relative to the lake's root, and the run id
    (the one definition, for write_record and for anything that must write one)."""
    text = json.dumps({**layout.refer_record(record, root), "run": run_id}, indent=2, sort_keys=True, allow_nan=False)
    return text.encode("utf-8")


def write_record(spark, features_uri: str, batch_id: str, run_id: str, record: dict) -> str:
    """A features run's record, before its tables' commits (which then name it): it appears whole."""
    path = layout.record_path(layout.batch_runs_of(features_uri), batch_id, run_id)
    hadoop_fs.write_bytes_atomically(spark, path, record_file(run_id, record, _root(features_uri)))
    return path


def _root(features_uri: str) -> str | None:
    return layout.lake_root(features_uri, layout.FEATURES)  # None: a folder outside a lake's layout


def read_record(spark, features_uri: str, batch_id: str, run_id: str) -> dict:
    """The record of a batch's run, its references resolved in this lake, with where it is ("record");
    DamagedLake naming it when it is missing or unreadable."""
    path = layout.record_path(layout.batch_runs_of(features_uri), batch_id, run_id)
    text = hadoop_fs.read_text(spark, path) if hadoop_fs.exists(spark, path) else None
    record = parse_batch_record(text, path, batch_id, run_id)
    root = _root(features_uri)
    return {**(layout.resolve_record(record, root) if root else record), "record": path}


def read_current(spark, table_uri: str, batch_ids: Iterable[str] | None = None):
    """The current rows of a table partitioned by batch_id (features, rejects) for every published
    batch, or those asked for, read from the files its log lists; None when there are none."""
    wanted = None if batch_ids is None else set(batch_ids)
    uris = [
        uri
        for batch, files in tables.current_files(table_uri).items()
        if wanted is None or batch in wanted
        for uri in files
    ]
    if not uris:
        return None
    return spark.read.option("basePath", table_uri.rstrip("/")).parquet(*uris)  # batch_id and run: columns


def clean_batch_runs(spark, features_uri: str, batch_id: str, current_run: str, cutoff: str) -> list[str]:
    """After a features run published: delete the batch's records and moments of runs older than
    cutoff (a run id: now less the tables' retention) other than its current run. Returns what went."""
    folder = layout.batch_folder(layout.batch_runs_of(features_uri), batch_id)
    gone = [
        f"{folder}/{name}"
        for name in hadoop_fs.list_names(spark, folder)
        if name < cutoff and not name.startswith((current_run + ".", "."))
    ]
    for uri in gone:
        hadoop_fs.delete(spark, uri)
    return gone


def clean_older_children(spark, parent_uri: str, cutoff: str) -> list[str]:
    """Delete the children of parent_uri named by a run id older than cutoff (e.g. staging folders
    of killed runs; cutoff: now less the retention, so another batch's running job keeps its own)."""
    gone = [f"{parent_uri.rstrip('/')}/{name}" for name in hadoop_fs.list_names(spark, parent_uri) if name < cutoff]
    for uri in gone:
        hadoop_fs.delete(spark, uri)
    return gone


def clean_spaces(spark, pca_uri: str, space: dict, cutoff: str) -> list[str]:
    """After a PCA run published `space` (its record): delete what no reader within the retention
    needs (cutoff: a run id, now less the retention): spaces other than it and its previous one, its
    runs other than the current one, and, for the batches it added, index pieces and confusion counts
    of vectors it no longer names; also the PCA commits of the layout before the vectors table and
    the per-batch PCA folders of the layout before spaces. Vectors are the vectors table's, which its
    vacuum cleans (tables.vacuum)."""
    root = layout.root_of_batch_folder(pca_uri)
    deleted = []

    def drop(uri: str) -> None:
        if root and not uri.startswith(root):  # never outside the lake (a copied lake's record)
            raise ValueError(f"refusing to clean {uri}: outside the lake {root}")
        hadoop_fs.delete(spark, uri)
        deleted.append(uri)

    current, space_uri = space["space"], layout.space_folder(pca_uri, space["space"])
    named = {uri.rstrip("/") for uri in space["vectors"].values()}
    for other in hadoop_fs.list_names(spark, f"{pca_uri}/{layout.SPACES_DIR}"):
        if other not in (current, space.get("previous_space")) and other < cutoff:
            drop(layout.space_folder(pca_uri, other))
    for run in hadoop_fs.list_names(spark, f"{space_uri}/{layout.SPACE_RUNS_DIR}"):
        if run < cutoff and run != space["run"]:
            drop(layout.space_run_folder(pca_uri, current, run))
    # Only where this run added: a run's leftovers are under the batches it was adding, so no listing
    # per batch of the lake (a batch's older counts wait for its next re-publish, or its space's end).
    # The index is the Airflow side's: its own switch deletes what its catalog retired (vector_index).
    for batch in space.get("added", []):
        for name in hadoop_fs.list_names(spark, f"{space_uri}/{layout.CONFUSION_DIR}/{batch}"):
            run = name.split(".", 1)[0]
            if run < cutoff and layout.vectors_folder(pca_uri, current, batch, run) not in named:
                drop(f"{space_uri}/{layout.CONFUSION_DIR}/{batch}/{name}")
    deleted += clean_older_children(spark, layout.commits_folder(pca_uri), cutoff)
    for name in hadoop_fs.list_names(spark, pca_uri):
        if name.startswith(layout.partition("")):  # pca/batch_id=<id>/: the layout before spaces
            drop(f"{pca_uri}/{name}")
    return deleted
