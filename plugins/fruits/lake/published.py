"""What the lake holds as published, read the way the jobs publish it: through the Delta tables.

A batch is *published* once the features table's log names its files (the features job commits the
rejects table, then the features table, under the batch's lease: leases.py); the run= folder of those
files names its run, whose record (batch_runs/batch_id=<id>/<run>.json, written before the commits)
holds its counts and settings. It is *processed* once the current embedding space holds that run:
the vectors table's current version is the space, and the newest run among its files' folders names
the PCA run whose record (its metrics.json) lists the batches' runs it holds. Files in a table's
folder that its log does not name are a run in progress, a killed one or a replaced version: never
something to read or count.
"""

import logging

from fruits.lake.storage import Storage
from fruits_jobs import commits, layout, tables

log = logging.getLogger(__name__)


def published_runs(storage: Storage) -> dict[str, str]:
    """{batch id: its current run} for every published batch: one read of the features table's log."""
    return tables.current_runs(storage.name + layout.FEATURES, storage.delta_options())


def read_record(storage: Storage, batch_id: str, run_id: str) -> dict:
    """A batch's run record, resolved in this lake (its references as URIs of it), with where it is
    ("record"); DamagedLake naming it when it is missing or cannot be read."""
    key = layout.record_path(layout.BATCH_RUNS.rstrip("/"), batch_id, run_id)
    text = storage.read_text(key) if key in storage.sizes(key) else None
    record = commits.parse_batch_record(text, storage.name + key, batch_id, run_id)
    return {**layout.resolve_record(record, storage.name), "record": storage.name + key}


def published_record(storage: Storage, batch_id: str, runs: dict[str, str] | None = None) -> dict | None:
    """The record of the batch's published run, or None when it is not published (runs: published_runs,
    when the caller has it)."""
    runs = published_runs(storage) if runs is None else runs
    return read_record(storage, batch_id, runs[batch_id]) if batch_id in runs else None


def is_published(storage: Storage, batch_id: str) -> bool:
    return batch_id in published_runs(storage)


def current_space(storage: Storage) -> dict | None:
    """The current space's record, or None when the lake has none yet: the vectors table's newest run
    (tables.current_space) names pca/spaces/<space>/runs/<run>/metrics.json, resolved in this lake
    (its references as URIs of it), with where it is ("record") and the table's vectors folders;
    DamagedLake naming the file when it is missing or cannot be read."""
    found = tables.current_space(storage.name + layout.VECTORS, storage.delta_options())
    if found is None:
        return None
    space, run, folders = found
    key = layout.space_record_path(layout.PCA, space, run)
    text = storage.read_text(key) if key in storage.sizes(key) else None
    record = commits.parse_space_record(text, storage.name + key, space, run)
    return {**layout.resolve_record(record, storage.name), "record": storage.name + key, "vectors": folders}


def in_space(space: dict | None, features: dict | None) -> bool:
    """Whether the space holds the batch's published version (its current features run)."""
    return bool(space and features and space["features_runs"].get(features["batch_id"]) == features["run"])


def is_processed(storage: Storage, batch_id: str) -> bool:
    """Published, and its published version is in the current space."""
    space, run = current_space(storage), published_runs(storage).get(batch_id)
    return space is not None and run is not None and space["features_runs"].get(batch_id) == run


def pca_pending(storage: Storage, refit: str, rule: dict) -> list[str]:
    """Why the PCA step has work even without new photos: published batches the current space does
    not hold, a refit asked for, or a k rule that differs from the space's (empty: nothing to do)."""
    space = current_space(storage)
    held = space["features_runs"] if space else {}
    missing = sorted(batch for batch, run in published_runs(storage).items() if held.get(batch) != run)
    reasons = [f"published batches not in the current space: {', '.join(missing)}"] if missing else []
    if space is not None and refit == "always":
        reasons.append("pca_refit=always")
    if space is not None and rule != space["k_rule"]:
        reasons.append(f"a new k rule {rule} (the space's: {space['k_rule']})")
    return reasons


def latest_processed_batch(storage: Storage) -> str | None:
    """The batch the current space took in last (its newest run's additions), or None."""
    space = current_space(storage)
    if space is None:
        return None
    published = published_runs(storage)
    held = [b for b in space["features_runs"] if published.get(b) == space["features_runs"][b]]
    added = [b for b in space.get("added", []) if b in held]
    return max(added or held, key=lambda b: space["features_runs"][b], default=None)
