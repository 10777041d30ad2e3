"""The lake's Delta tables: any engine (DuckDB, pandas and polars through `deltalake`, Spark on EMR,
Athena) reads a table's current rows from its Delta log, with no code of this project.

delta-rs (the `deltalake` package: no JVM, no Maven jars) commits the Parquet files Spark already
wrote into the table's folder; this module only says which files make a batch's new version. One
commit per table per publish: the batch's partition (`batch_id`) is replaced whole, its old files
removed and the new ones added in the same log entry, so a reader sees the old version or the new.

On S3, delta-rs 1.x commits with S3's conditional writes (If-None-Match on the log entry), no
DynamoDB lock (delta-io/delta-rs discussion #4482); it talks to S3 itself, not through boto3.
"""

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import unquote

import pyarrow as pa

from fruits_jobs import layout

# The columns of each table as the features job writes them (contract with Spark's output; a test
# checks Spark's files against them). The partition column is in the log, not in the files.
FEATURES_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("label", pa.string()),
        ("split", pa.string()),
        ("sha256", pa.string()),
        ("features", pa.list_(pa.float32())),
        (layout.PARTITION_COLUMN, pa.string()),
    ]
)
REJECTS_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("label", pa.string()),
        ("split", pa.string()),
        (layout.PARTITION_COLUMN, pa.string()),
    ]
)
SCHEMAS = {layout.FEATURES: FEATURES_SCHEMA, layout.REJECTS: REJECTS_SCHEMA}
# The tables a features run publishes to, in their publishing order: rejects, then features (the
# consumers' publication point). Leases fence both (leases.fence_tables).
BATCH_TABLES = (layout.REJECTS, layout.FEATURES)
# The vectors table holds the current space's vectors (a new space replaces them all in one commit),
# partitioned by space and batch: the space is a column every reader gets, and Glue registers the
# table once (docs/lake.md, "Reading the lake"). batch_id is also in the files, as the PCA job writes them.
SPACE_COLUMN = "space"
VECTORS_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("label", pa.string()),
        ("split", pa.string()),
        (layout.PARTITION_COLUMN, pa.string()),
        ("pca", pa.list_(pa.float32())),
        (SPACE_COLUMN, pa.string()),
    ]
)
# Every table of the lake, by the name readers use (fruits sql, fruits check): its folder.
TABLES = {"features": layout.FEATURES, "rejects": layout.REJECTS, "vectors": layout.VECTORS}


def table_location(uri: str) -> str:
    """What delta-rs takes for a URI of the jobs (Hadoop's file:/a/b, or s3://bucket/key): a local
    path, or the s3:// URI (s3a:// and s3n:// are Hadoop's names for the same objects)."""
    uri = uri.rstrip("/")
    if uri.startswith("file:"):
        return "/" + uri[len("file:") :].lstrip("/")
    if uri.startswith(("s3a://", "s3n://")):
        return "s3://" + uri.split("://", 1)[1]
    return uri


def storage_options(location: str) -> dict[str, str] | None:
    """delta-rs's S3 settings: the endpoint (tests: a moto server) and the region, from the standard
    AWS environment variables; credentials come from its own default chain (env, profile, instance role).
    Without a region in the environment (an EMR step's driver has none), the bucket's own, which
    pyarrow asks S3 for (HeadBucket): delta-rs would otherwise assume us-east-1."""
    if not location.startswith("s3://"):
        return None
    options = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        options["AWS_ALLOW_HTTP"] = "true" if endpoint.startswith("http://") else "false"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region and not endpoint:
        from pyarrow.fs import resolve_s3_region

        region = resolve_s3_region(location[len("s3://") :].split("/", 1)[0])
    if region:
        options["AWS_REGION"] = region
    return options


def relative_path(table: str, file_uri: str) -> str:
    """A data file's path as the log stores it: relative to the table, so a moved or copied table
    reads the same. A file outside the table's folder cannot be added (Delta reads it nowhere else)."""
    file_location = table_location(file_uri)
    if not file_location.startswith(table + "/"):
        raise ValueError(f"{file_uri} is not inside the table {table}: write it into the table's folder")
    return file_location[len(table) + 1 :]


def file_stats(num_records: int) -> str:
    """The statistics an added file carries (Delta protocol, "Per-file Statistics"): its row count,
    which readers use to count and plan without opening it."""
    return json.dumps({"numRecords": num_records})


DataFile = tuple[str, int, int]  # (uri, size in bytes, rows): what an added file's action records


def parquet_files(file_uris: Iterable[str]) -> list[DataFile]:
    """(uri, size in bytes, rows) of each Parquet file, from its footer (pyarrow reads local files
    and S3 alike; credentials from the default chain)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    found = []
    for uri in file_uris:
        fs, path = pafs.FileSystem.from_uri(table_location(uri))
        size = fs.get_file_info(path).size
        with fs.open_input_file(path) as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
        found.append((uri, size, rows))
    return found


def add_actions(table: str, partition: Mapping[str, str], files: Iterable[DataFile]) -> list:
    from deltalake.transaction import AddAction

    now = int(time.time() * 1000)
    return [
        AddAction(relative_path(table, uri), size, dict(partition), now, True, file_stats(rows))
        for uri, size, rows in files
    ]


def remove_actions(delta, replaced: Callable[[dict], bool]) -> list:
    """The current files of the partitions `replaced` says go (it gets each file's partition values)."""
    from deltalake.transaction import RemoveAction

    now = int(time.time() * 1000)
    current = pa.table(delta.get_add_actions(flatten=True)).to_pylist()
    removes = []
    for entry in current:
        partition = {k[len("partition.") :]: v for k, v in entry.items() if k.startswith("partition.")}
        if replaced(partition):
            removes.append(RemoveAction(entry["path"], True, now, entry["size_bytes"], partition))
    return removes


def open_table(table_uri: str, options: dict[str, str] | None = None):
    """The table's current version (deltalake's TableNotFoundError when there is none); options:
    delta-rs's storage options (default: storage_options, the environment's credentials)."""
    from deltalake import DeltaTable

    table = table_location(table_uri)
    return DeltaTable(table, storage_options=options if options is not None else storage_options(table))


def exists(table_uri: str, options: dict[str, str] | None = None) -> bool:
    from deltalake import DeltaTable

    table = table_location(table_uri)
    return DeltaTable.is_deltatable(table, storage_options=options if options is not None else storage_options(table))


class GivenUp(RuntimeError):
    """The table's log says the batch's lease moved past this run's generation: it publishes nothing."""


def lease_app_id(batch_id: str) -> str:
    """The Delta transaction identifier (txn appId) that carries a batch's lease generation."""
    return f"fruits-lease:{batch_id}"


Fence = tuple[str, int]  # (lease_app_id(batch), the lease generation the run started under)


def commit_properties(metadata: Mapping[str, object], fence: Fence | None = None):
    """What every commit of ours records: the metadata (for `history()`), delta-rs's retries over a
    concurrent writer's commit, and the run's lease generation as the batch's txn (commit_actions)."""
    from deltalake import CommitProperties
    from deltalake.transaction import Transaction

    return CommitProperties(
        custom_metadata={k: str(v) for k, v in metadata.items()},
        max_commit_retries=10,
        app_transactions=[Transaction(*fence)] if fence else None,
    )


def check_fence(delta, fence: Fence | None) -> None:
    if fence is None:
        return
    app_id, generation = fence
    recorded = delta.transaction_version(app_id)
    if recorded is not None and recorded > generation:
        raise GivenUp(
            f"{delta.table_uri}: the lease of {app_id.split(':', 1)[1]} is at generation {recorded} in the "
            f"table's log, this run started under {generation}: it was given up and publishes nothing"
        )


def commit_actions(delta, removes: list, adds: list, partition_by: list[str], metadata, fence: Fence | None) -> int:
    """One commit of removes + adds into the loaded table, fenced: it carries the run's lease
    generation as the batch's Delta transaction (txn); a concurrent commit of a newer generation
    (a revoke, a new run's lease) makes delta-rs refuse it ("Concurrent transaction failed"), and a
    snapshot that already shows one refuses it here (GivenUp)."""
    check_fence(delta, fence)
    delta.create_write_transaction(
        removes + adds,
        mode="append",
        schema=delta.schema(),
        partition_by=partition_by,
        commit_properties=commit_properties(metadata, fence),
    )
    delta.update_incremental()
    return delta.version()


def publish(
    table_uri: str,
    schema: pa.Schema,
    partition_by: list[str],
    new_files: Mapping[tuple[str, ...], Iterable[DataFile]],
    replaced: Callable[[dict], bool],
    metadata: Mapping[str, object],
    fence: Fence | None = None,
    options: dict[str, str] | None = None,
) -> int:
    """One commit: the current files of every partition `replaced` names go, new_files ({partition
    values, in partition_by's order: Parquet files inside the table's folder, parquet_files}) come; the table is
    created by its first publish. Returns the version. metadata: what the commit records (run,
    counts) for `history()`; no reader needs it, since the log's cleanup drops old commit information.
    A concurrent writer's commit is retried over (delta-rs, max_commit_retries) unless it touched the
    same files, which fails naming the conflict. fence: the run's lease (commit_actions); GivenUp
    when the log shows it was given up, before or during the commit."""
    from deltalake import DeltaTable
    from deltalake import Schema as DeltaSchema
    from deltalake.exceptions import CommitFailedError, TableNotFoundError
    from deltalake.transaction import create_table_with_add_actions

    table = table_location(table_uri)
    options = options if options is not None else storage_options(table)
    adds = [
        action
        for values, files in new_files.items()
        for action in add_actions(table, dict(zip(partition_by, values, strict=True)), files)
    ]
    try:
        delta = open_table(table, options)
    except TableNotFoundError:
        try:
            create_table_with_add_actions(
                table,
                DeltaSchema.from_arrow(schema),
                adds,
                mode="error",
                partition_by=partition_by,
                storage_options=options,
                commit_properties=commit_properties(metadata, fence),
            )
            return open_table(table, options).version()
        except Exception:  # another writer created it first: publish into its table
            if not DeltaTable.is_deltatable(table, storage_options=options):
                raise
        delta = open_table(table, options)
    for attempt in range(3):
        # A file both current and new stays as it is (Delta refuses to remove and add one path in a
        # commit): publishing the same files again changes nothing.
        removes = remove_actions(delta, replaced)
        kept = {action.path for action in removes} & {action.path for action in adds}
        todo_removes = [action for action in removes if action.path not in kept]
        todo_adds = [action for action in adds if action.path not in kept]
        if not todo_removes and not todo_adds:
            check_fence(delta, fence)
            return delta.version()
        try:
            return commit_actions(delta, todo_removes, todo_adds, partition_by, metadata, fence)
        except CommitFailedError:
            if attempt == 2:
                raise
            delta = open_table(table, options)  # what won: check the fence against it, retry
    raise AssertionError("unreachable")


def fence_table(
    table_uri: str, schema: pa.Schema, batch_id: str, generation: int, metadata: Mapping[str, object], options=None
) -> int:
    """Record in the table's log that the batch's lease is at `generation` (a new run's lease, or a
    revoke): an empty commit carrying the batch's txn at that version, so a run of an older generation
    can no longer commit there (commit_actions). A table that does not exist yet is created by it,
    empty, so a fence is never lost to a table that a late run would create. options: delta-rs's
    storage options (open_table). Returns the table's version."""
    from deltalake import Schema as DeltaSchema
    from deltalake.exceptions import TableNotFoundError
    from deltalake.transaction import create_table_with_add_actions

    properties = commit_properties(metadata, (lease_app_id(batch_id), generation))
    try:
        delta = open_table(table_uri, options)
    except TableNotFoundError:
        table = table_location(table_uri)
        try:
            create_table_with_add_actions(
                table,
                DeltaSchema.from_arrow(schema),
                [],
                mode="error",
                partition_by=[layout.PARTITION_COLUMN],
                storage_options=options,
                commit_properties=properties,
            )
            return open_table(table, options).version()
        except Exception:  # another writer created it first: fence its table
            if not exists(table, options):
                raise
        delta = open_table(table_uri, options)
    delta.create_write_transaction([], mode="append", schema=delta.schema(), commit_properties=properties)
    delta.update_incremental()
    return delta.version()


def publish_batch(
    table_uri: str,
    schema: pa.Schema,
    batch_id: str,
    file_uris: Iterable[str],
    metadata: Mapping[str, object],
    generation: int | None = None,
) -> int:
    """A batch's new version in a table partitioned by batch_id: its old files out, file_uris in;
    fenced by the lease generation the run started under (None: a lake without leases)."""
    fence = None if generation is None else (batch_id, generation)
    return publish_batches(table_uri, schema, {batch_id: file_uris}, metadata, fence)


def publish_batches(
    table_uri: str,
    schema: pa.Schema,
    files_by_batch: Mapping[str, Iterable[str]],
    metadata: Mapping[str, object],
    fence: tuple[str, int] | None = None,
) -> int:
    """Several batches' new versions in one commit (publish_batch's, for each), fenced by one batch's
    lease (batch id, generation) when given."""
    batches = set(files_by_batch)
    return publish(
        table_uri,
        schema,
        [layout.PARTITION_COLUMN],
        {(batch,): parquet_files(uris) for batch, uris in files_by_batch.items()},
        lambda partition: partition.get(layout.PARTITION_COLUMN) in batches,
        metadata,
        None if fence is None else (lease_app_id(fence[0]), fence[1]),
    )


def create_table(
    table_uri: str,
    schema: pa.Schema,
    files_by_batch: Mapping[str, Iterable[DataFile]],
    metadata: Mapping[str, object],
    options: dict[str, str] | None = None,
) -> int:
    """The table's first version: every batch's files, in one commit (a lake published before the
    tables: its batches' current outputs). Another writer's table, created first, keeps its rows
    and takes these batches' files. Returns the table's version."""
    return publish(
        table_uri,
        schema,
        [layout.PARTITION_COLUMN],
        {(batch,): list(files) for batch, files in files_by_batch.items()},
        lambda partition: partition.get(layout.PARTITION_COLUMN) in files_by_batch,
        metadata,
        options=options,
    )


def current_entries(table_uri: str, options: dict[str, str] | None = None) -> dict[str, list[tuple[str, int | None]]]:
    """{batch id: (URI, rows) of each Parquet file in the table's current version}, from its log alone:
    the URI in table_uri's own scheme (s3a:// stays s3a://), the rows from the file's statistics
    (numRecords, which every commit of ours records: file_stats; None without them). Empty when the
    table does not exist yet."""
    from deltalake.exceptions import TableNotFoundError

    try:
        actions = pa.table(open_table(table_uri, options).get_add_actions(flatten=True))
    except TableNotFoundError:
        return {}
    base, found = table_uri.rstrip("/"), dict[str, list[tuple[str, int | None]]]()
    counted = "num_records" in actions.column_names
    for entry in actions.to_pylist():
        batch = entry.get(f"partition.{layout.PARTITION_COLUMN}")
        found.setdefault(batch, []).append(
            (f"{base}/{unquote(entry['path'])}", entry["num_records"] if counted else None)
        )
    return found


def current_files(table_uri: str, options: dict[str, str] | None = None) -> dict[str, list[str]]:
    """{batch id: the URIs of its Parquet files in the table's current version}: what Spark reads,
    since local Spark has no Delta reader."""
    return {batch: sorted(uri for uri, _ in files) for batch, files in current_entries(table_uri, options).items()}


def batch_rows(table_uri: str, options: dict[str, str] | None = None) -> dict[str, tuple[str, int | None]]:
    """{batch id: (its current run, its rows)} from the table's log alone, so no data file is listed
    or read. Rows None when a file has no statistics."""
    return {
        batch: (
            run_of_files(table_uri, batch, [uri for uri, _ in files]),
            None if any(n is None for _, n in files) else sum(n for _, n in files),  # type: ignore[misc]
        )
        for batch, files in current_entries(table_uri, options).items()
    }


def current_runs(table_uri: str, options: dict[str, str] | None = None) -> dict[str, str]:
    """{batch id: its current run}, from the run= folder of its current files (a publish replaces a
    batch's files whole, with one run's): for the features table, the one rule for "published"."""
    return {batch: run_of_files(table_uri, batch, uris) for batch, uris in current_files(table_uri, options).items()}


def run_of_files(table_uri: str, batch_id: str, uris: list[str]) -> str:
    """The run whose folder holds a batch's current files (ValueError: files of several runs, or of
    none, which no publish of ours makes)."""
    found = [layout.run_of_file(uri) for uri in uris]
    runs = {parsed[1] for parsed in found if parsed is not None}
    if len(runs) != 1 or None in found:
        raise ValueError(f"{table_uri}: batch {batch_id}'s current files are not one run's ({uris[:3]})")
    return runs.pop()


def current_space(table_uri: str, options: dict[str, str] | None = None) -> tuple[str, str, dict[str, str]] | None:
    """Of the vectors table's current version: (its space, the newest run that committed there, {batch
    id: its vectors folder URI}); None when the table does not exist or is empty. Every PCA run adds
    files under its own run's folder (a batch without a featurized photo: one file without rows), so
    the newest run among the current files is the run that published the space's current version,
    and its record (layout.space_record_path) is the space's. ValueError: files of two spaces."""
    from deltalake.exceptions import TableNotFoundError

    try:
        delta = open_table(table_uri, options)
    except TableNotFoundError:
        return None
    base, found = table_uri.rstrip("/"), set()
    for entry in pa.table(delta.get_add_actions(flatten=True)).select(["path"]).to_pylist():
        parsed = layout.vectors_of_file(unquote(entry["path"]))
        if parsed is None:
            raise ValueError(f"{base}/{entry['path']}: not in the vectors table's layout (<space>/<batch>/<run>/)")
        found.add(parsed)
    if not found:
        return None
    spaces = {space for space, _, _ in found}
    if len(spaces) != 1:
        raise ValueError(f"{table_uri}: its current version holds vectors of spaces {sorted(spaces)}, not one")
    (space,) = spaces
    folders = {batch: f"{base}/{space}/{batch}/{run}" for _, batch, run in sorted(found)}
    return space, max(run for _, _, run in found), folders


# delta-rs's default vacuum retention (168 hours): what the time-travel window is unless set.
DEFAULT_RETENTION_HOURS = 168


def vacuum(table_uri: str, retention_hours: float, options: dict[str, str] | None = None) -> list[str]:
    """Delete what the table's folder holds that no version within the retention needs: files its
    log removed more than retention_hours ago, and (full) files no version lists that are older than
    that, e.g. a killed run's. The retention must outlive the longest job (a running job's files are
    not in the log yet) and the slowest reader of the previous version; it is the time-travel window.
    Returns the paths deleted (relative to the table). delta-rs records the vacuum in the log."""
    from deltalake.exceptions import TableNotFoundError

    try:
        delta = open_table(table_uri, options)
    except TableNotFoundError:
        return []
    deleted = delta.vacuum(
        retention_hours=max(0, math.ceil(retention_hours)),
        dry_run=False,
        enforce_retention_duration=False,  # the setting is ours (config), checked against the job timeouts
        full=True,
    )
    location = table_location(table_uri)
    if "://" not in location:  # a local table: the folders the vacuum emptied go too (S3 has none)
        remove_empty_parents(location, deleted)
    return deleted


def remove_empty_parents(table: str, deleted: Iterable[str]) -> None:
    """The folders of the deleted files (their run folders, past the retention: no job writes there),
    once empty, and their parents up to the table's folder."""
    for folder in sorted({os.path.dirname(path) for path in deleted}, key=len, reverse=True):
        while folder:
            try:
                os.rmdir(os.path.join(table, folder))
            except OSError:  # not empty (or gone): stop climbing
                break
            folder = os.path.dirname(folder)
