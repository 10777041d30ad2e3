"""What the lake holds as published, read the way the jobs publish it: through commits.

A batch is *published* once the features job committed it (features, rejects and summary switch
together) under the batch's lease (leases.py), and *processed* once a PCA run for it committed too.
The newest commit of a batch folder is its current version (fruits_jobs/commits.py writes them); a
folder's files without a commit are a run in progress or a killed one, and a commit whose lease was
revoked is a run given up: never something to read or count.
"""

import logging

from fruits.lake.leases import read_lease
from fruits.lake.storage import Storage
from fruits_jobs import commits, layout

log = logging.getLogger(__name__)


def current_commit(storage: Storage, dataset: str, batch_id: str) -> dict | None:
    """The batch's newest commit in dataset, or None; DamagedLake naming the file when it cannot be read."""
    prefix = layout.commits_prefix(dataset, batch_id)
    names = [key[len(prefix) :] for key in storage.sizes(prefix)]
    for stray in layout.stray_names(names):
        log.warning("ignoring %s%s%s: not a commit (commits are named <run id>.json)", storage.name, prefix, stray)
    runs = layout.committed_runs(names)
    if not runs:
        return None
    key = layout.commit_path(layout.batch_folder(dataset, batch_id), runs[-1])
    record = commits.parse_commit(storage.read_text(key), storage.name + key, dataset)
    return {**layout.resolve_record(record, storage.name), "commit": storage.name + key}


def published_commit(storage: Storage, batch_id: str) -> dict | None:
    """The batch's current features commit while it is live (its lease holds its token), else None."""
    commit = current_commit(storage, layout.FEATURES, batch_id)
    return commit if commit is not None and commits.is_live(commit, read_lease(storage, batch_id)) else None


def is_published(storage: Storage, batch_id: str) -> bool:
    return published_commit(storage, batch_id) is not None


def is_processed(storage: Storage, batch_id: str) -> bool:
    return is_published(storage, batch_id) and current_commit(storage, layout.PCA, batch_id) is not None


def committed_batches(storage: Storage, dataset: str) -> dict[str, str]:
    """batch id -> its newest committed run id, for every *published* batch with a commit in dataset."""
    newest: dict[str, str] = {}
    for key in storage.sizes(dataset):
        parsed = layout.parse_commit_key(key, dataset)
        if parsed:
            batch, run = parsed
            newest[batch] = max(newest.get(batch, ""), run)
    return {batch: run for batch, run in newest.items() if is_published(storage, batch)}


def latest_processed_batch(storage: Storage) -> str | None:
    """The batch whose PCA committed last (run ids sort by time), or None."""
    newest = committed_batches(storage, layout.PCA)
    return max(newest, key=lambda batch: newest[batch]) if newest else None
