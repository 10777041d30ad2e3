"""What the lake holds as published, read the way the jobs publish it: through commits.

A batch is *published* once the features job committed it (features, rejects and summary switch
together) under the batch's lease (leases.py), and *processed* once the current embedding space holds
that version (pca/_commits/<run>.json, the newest, names the space and every batch's vectors in it).
The newest commit of a batch folder is its current version (fruits_jobs/commits.py writes them); a
folder's files without a commit are a run in progress or a killed one, and a commit whose lease was
revoked is a run given up: never something to read or count.
"""

import logging

from fruits.lake.leases import read_lease
from fruits.lake.storage import Storage
from fruits_jobs import commits, layout

log = logging.getLogger(__name__)


def newest_run(storage: Storage, batch_id: str) -> str | None:
    """The run id of the batch's newest features commit, from one listing of its names (none read)."""
    prefix = layout.commits_prefix(layout.FEATURES, batch_id)
    runs = layout.committed_runs(key[len(prefix) :] for key in storage.sizes(prefix))
    return runs[-1] if runs else None


def newest_commit(storage: Storage, folder: str, parse) -> dict | None:
    """The newest commit in <folder>/_commits/ (folder: a key), resolved in this lake, or None; parse
    (text, where) -> record raises DamagedLake naming the file when it cannot be read."""
    prefix = layout.commits_folder(folder) + "/"
    names = [key[len(prefix) :] for key in storage.sizes(prefix) if "/" not in key[len(prefix) :]]
    for stray in layout.stray_names(names):
        log.warning("ignoring %s%s%s: not a commit (commits are named <run id>.json)", storage.name, prefix, stray)
    runs = layout.committed_runs(names)
    if not runs:
        return None
    key = layout.commit_path(folder, runs[-1])
    record = parse(storage.read_text(key), storage.name + key)
    return {**layout.resolve_record(record, storage.name), "commit": storage.name + key}


def current_commit(storage: Storage, dataset: str, batch_id: str) -> dict | None:
    """The batch's newest commit in dataset, or None; DamagedLake naming the file when it cannot be read."""
    return newest_commit(
        storage, layout.batch_folder(dataset, batch_id), lambda text, where: commits.parse_commit(text, where, dataset)
    )


def published_commit(storage: Storage, batch_id: str) -> dict | None:
    """The batch's current features commit while it is live (its lease holds its token), else None."""
    commit = current_commit(storage, layout.FEATURES, batch_id)
    return commit if commit is not None and commits.is_live(commit, read_lease(storage, batch_id)) else None


def is_published(storage: Storage, batch_id: str) -> bool:
    return published_commit(storage, batch_id) is not None


def current_space(storage: Storage) -> dict | None:
    """The newest pca/_commits/<run>.json, resolved in this lake (its references as URIs of it), or
    None when the lake has no space yet; DamagedLake naming the file when it cannot be read."""
    fix = "move it out of pca/_commits/ (the previous commit, if any, becomes current) and run with pca_refit=always"
    return newest_commit(
        storage,
        layout.PCA,
        lambda text, where: commits.parse_record(text, where, commits.REQUIRED_KEYS[layout.PCA], fix),
    )


def in_space(space: dict | None, features: dict | None) -> bool:
    """Whether the space holds the batch's published version (its current features run)."""
    return bool(space and features and space["features_runs"].get(features["batch_id"]) == features["run"])


def is_processed(storage: Storage, batch_id: str) -> bool:
    """Published, and its published version is in the current space."""
    return in_space(current_space(storage), published_commit(storage, batch_id))


def committed_batches(storage: Storage, dataset: str) -> dict[str, str]:
    """batch id -> its newest committed run id, for every *published* batch with a commit in dataset."""
    newest: dict[str, str] = {}
    for key in storage.sizes(dataset):
        parsed = layout.parse_commit_key(key, dataset)
        if parsed:
            batch, run = parsed
            newest[batch] = max(newest.get(batch, ""), run)
    return {batch: run for batch, run in newest.items() if is_published(storage, batch)}


def pca_pending(storage: Storage, refit: str, rule: dict) -> list[str]:
    """Why the PCA step has work even without new photos: published batches the current space does
    not hold, a refit asked for, or a k rule that differs from the space's (empty: nothing to do)."""
    space = current_space(storage)
    held = space["features_runs"] if space else {}
    # The ingested batches (one listing of manifests/), each by its commits' names, and only a batch
    # whose newest commit the space does not hold read further: never a listing of all of features/,
    # whose part files grow with the lake (and which Airflow's policy does not grant).
    ingested = sorted(b for b in (layout.batch_of_manifest(key) for key in storage.sizes(layout.MANIFESTS)) if b)
    missing = [b for b in ingested if newest_run(storage, b) not in (None, held.get(b)) and is_published(storage, b)]
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
    newest = committed_batches(storage, layout.FEATURES)
    held = [b for b in space["features_runs"] if newest.get(b) == space["features_runs"][b]]
    added = [b for b in space.get("added", []) if b in held]
    return max(added or held, key=lambda b: space["features_runs"][b], default=None)
