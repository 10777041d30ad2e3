"""Is what the lake publishes still there? For each batch, its run record can be read and the
folders it names hold files; each Delta table's log reads, and the files it names exist. `fruits
check` (all batches) and `fruits batches` (a column) say so. A damaged batch is mended by a re-run
(the `rerun` param: docs/operations.md, "Repair")."""

from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa

from fruits.lake.published import current_space, in_space, published_record, published_runs
from fruits.lake.storage import LocalStorage, Storage
from fruits_jobs import layout, tables
from fruits_jobs.commits import DamagedLake


def holds_files(storage: Storage, uri: str) -> bool:
    """Whether a folder a record names (resolved in this lake) holds anything."""
    if not uri.startswith(storage.name):
        return False
    return bool(storage.sizes(uri[len(storage.name) :].rstrip("/") + "/"))


def unreadable_part(storage: Storage, uri: str) -> str | None:
    """In a lake folder, the first Parquet file whose footer cannot be read, with why (on S3 this
    would read every file's tail: existence only there)."""
    if not isinstance(storage, LocalStorage):
        return None
    import pyarrow.parquet as pq

    for part in sorted(Path(uri).rglob("*.parquet")):
        try:
            pq.read_metadata(part)
        except Exception as exc:  # pyarrow raises several kinds for a damaged file: any is "unreadable"
            return f"{part.name}: {exc}"
    return None


def batch_problems(storage: Storage, batch_id: str, runs: dict[str, str] | None = None) -> list[str]:
    """What is wrong with a batch's published outputs (nothing: an empty list); runs: published_runs."""
    try:
        features = published_record(storage, batch_id, runs)
        space = current_space(storage)
    except DamagedLake as exc:
        return [str(exc)]
    named = {name: (features or {}).get(name) for name in ("features", "rejects")}
    if in_space(space, features):
        assert space is not None
        named.update({"pca vectors": space["vectors"].get(batch_id), "pca model": space["model"]})
    problems = []
    for name, uri in named.items():
        if not uri:
            continue
        if not holds_files(storage, uri):
            problems.append(
                f"{name}: {uri} is missing (its record names it): re-run the batch (docs/operations.md, 'Repair')"
            )
        elif bad := unreadable_part(storage, uri):
            problems.append(f"{name}: {uri} is unreadable ({bad}): re-run the batch (docs/operations.md, 'Repair')")
    return problems


def known_batches(storage: Storage, runs: dict[str, str] | None = None) -> list[str]:
    """Every batch the lake knows of: it finished ingest (a manifest) or is published (runs:
    published_runs, when the caller has it)."""
    ingested = {layout.batch_of_manifest(key) for key in storage.sizes(layout.MANIFESTS)}
    return sorted({b for b in ingested if b} | set(published_runs(storage) if runs is None else runs))


def table_problems(storage: Storage, name: str, folder: str) -> list[str]:
    """What is wrong with a Delta table of the lake (nothing: an empty list; no table yet: nothing).
    A log entry that cannot be read blocks every reader and writer, and no commit mends it: the
    message names it and the manual repair of docs/operations.md. A data file the current version names that is
    gone is mended by re-running its batch (its partition is then replaced)."""
    log = folder + "_delta_log/"
    entries = storage.sizes(log)
    if not entries:
        return []
    try:
        current = pa.table(tables.open_table(storage.name + folder).get_add_actions(flatten=True)).to_pylist()
    except Exception as exc:  # delta-rs raises several kinds for a damaged log: any is "unreadable"
        newest = max(entries)
        return [
            f"table {name}: its Delta log {storage.name}{log} cannot be read ({str(exc).splitlines()[0]}); "
            f"newest entry {storage.name}{newest}: docs/operations.md, 'Repairing a Delta log'"
        ]
    present = set(storage.sizes(folder))
    return [
        f"table {name}: {storage.name}{folder}{unquote(entry['path'])} is missing (its current version names "
        f"it): re-run batch {entry.get('partition.' + layout.PARTITION_COLUMN)} (docs/operations.md, 'Repair')"
        for entry in current
        if folder + unquote(entry["path"]) not in present
    ]
