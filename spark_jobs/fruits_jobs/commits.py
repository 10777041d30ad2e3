"""How a batch's outputs switch as one unit, on a local disk and on S3 alike: runs and commits.

Each run of a job writes into folders of its own, `<dataset>/batch_id=<id>/run=<run id>/`, that
nobody reads yet; then it writes ONE small commit file, `<batch folder>/_commits/<run id>.json`,
naming everything the run produced (for the features job: its features, its rejects and its
summary). The newest commit of a batch is its current version: a reader that resolves it sees
that run's outputs, all of them, or (before the commit exists) the previous run's; never a mix,
never nothing. A commit is written under a hidden name and renamed, so it appears whole: a local
rename is atomic, and on S3 the renamed (copied) object appears at once.

Run ids start with the UTC time, so "newest" is the largest id. After its commit a run deletes
what is older than itself and no longer current: runs that never committed (killed ones), and
committed runs before the previous one (kept, so a reader that resolved it just before can finish).

Readers go through `current_uris` / `read_current` (or the commit JSON), never through a bare
listing of the dataset folder, which also holds runs that are not (or no longer) current.

Fencing: a features commit carries the token of its batch's lease (layout.lease_key), which each
run's ingest issues; it is the batch's published version only while that token is still the
lease's (`is_live`). The Airflow side revokes the lease when it gives up on a run (README,
"Publishing"), so a job that outlives its run can still write its commit, never make it live.
"""

import json
import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from fruits_jobs import hadoop_fs, layout

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
        "or re-run the batch (README, 'Repair')"
    )
    return parse_record(text, where, REQUIRED_KEYS.get(dataset, ()), fix)


def new_run_id(now: datetime | None = None) -> str:
    """Sortable by time (to the millisecond), unique by its random tail."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%S')}{now.microsecond // 1000:03d}Z-{uuid.uuid4().hex[:8]}"


def is_live(commit: dict, lease: dict | None) -> bool:
    """A commit publishes its batch while its token is the lease's. No lease: a lake written before
    leases, whose commits carry no token either."""
    if lease is None:
        return commit.get("token") is None
    return lease.get("token") is not None and commit.get("token") == lease["token"]


def read_lease(spark, lease_uri: str) -> dict | None:
    return json.loads(hadoop_fs.read_text(spark, lease_uri)) if hadoop_fs.exists(spark, lease_uri) else None


def commit_file(folder_uri: str, run_id: str, record: dict) -> tuple[str, bytes]:
    """The commit of a run: where it goes and what it holds (the record, its references relative to
    the lake, and the run id). Pure: the one definition of a commit's bytes, for write_commit and
    for anything that must write one."""
    record = layout.refer_record(record, layout.root_of_batch_folder(folder_uri))
    text = json.dumps({**record, "run": run_id}, indent=2, sort_keys=True, allow_nan=False)
    return layout.commit_path(folder_uri, run_id), text.encode("utf-8")


def write_commit(spark, folder_uri: str, run_id: str, record: dict) -> str:
    """Make the run current: its commit file appears whole (hidden name, then rename)."""
    final, data = commit_file(folder_uri, run_id, record)
    hadoop_fs.write_bytes_atomically(spark, final, data)
    return final


def committed_runs(spark, folder_uri: str) -> list[str]:
    """The run ids with a commit in this folder, oldest first (anything else there: a warning)."""
    names = hadoop_fs.list_names(spark, layout.commits_folder(folder_uri))
    for stray in layout.stray_names(names):
        log.warning(
            "ignoring %s/%s: not a commit (commits are named <run id>.json)", layout.commits_folder(folder_uri), stray
        )
    return layout.committed_runs(names)


def current(spark, folder_uri: str, dataset: str = layout.FEATURES) -> dict | None:
    """The newest commit of this folder, or None when no run of it ever committed (DamagedLake when
    it cannot be read: never silently left out of a lake-wide figure)."""
    runs = committed_runs(spark, folder_uri)
    return read_commit(spark, folder_uri, runs[-1], dataset) if runs else None


def newest_runs(spark, dataset_uri: str) -> dict[str, str]:
    """{batch id: the run id of its newest commit}, from file names alone (no commit is read)."""
    prefix = layout.partition("")
    found = {}
    for name in hadoop_fs.list_names(spark, dataset_uri):
        if name.startswith(prefix):
            runs = committed_runs(spark, layout.batch_folder(dataset_uri, name[len(prefix) :]))
            if runs:
                found[name[len(prefix) :]] = runs[-1]
    return found


def read_commit(spark, folder_uri: str, run_id: str, dataset: str) -> dict:
    path = layout.commit_path(folder_uri, run_id)
    record = parse_commit(hadoop_fs.read_text(spark, path), path, dataset)
    root = layout.root_of_batch_folder(folder_uri)
    return layout.resolve_record(record, root) if root else record


def current_by_batch(spark, dataset_uri: str, batch_ids: Iterable[str] | None = None) -> dict[str, dict]:
    """{batch id: its current commit} for the batches of a dataset that have one."""
    prefix = layout.partition("")
    batches = [n[len(prefix) :] for n in hadoop_fs.list_names(spark, dataset_uri) if n.startswith(prefix)]
    wanted = set(batch_ids) if batch_ids else None
    found = {}
    for batch_id in sorted(batches):
        if wanted is None or batch_id in wanted:
            record = current(spark, layout.batch_folder(dataset_uri, batch_id))
            if record is not None:
                found[batch_id] = record
    return found


def live_by_batch(spark, dataset_uri: str, root: str | None, batch_ids: Iterable[str] | None = None) -> dict[str, dict]:
    """{batch id: its current commit} for the batches whose commit is live (its lease holds its
    token); root: the lake's, where the leases are (None: a folder outside a lake, without leases)."""
    return {
        batch: record
        for batch, record in current_by_batch(spark, dataset_uri, batch_ids).items()
        if is_live(record, read_lease(spark, root + layout.lease_key(batch)) if root else None)
    }


def read_current(spark, dataset_uri: str, output: str, batch_ids: Iterable[str] | None = None):
    """The current rows of `output` ("features" or "rejects", as named in the features job's
    commits under dataset_uri) for every published batch (its commit is live), or those asked for;
    None when there are none."""
    live = live_by_batch(spark, dataset_uri, layout.root_of(dataset_uri, layout.FEATURES), batch_ids)
    uris = [record[output] for record in live.values() if record.get(output)]
    if not uris:
        return None
    base = uris[0].rsplit("/", 2)[0]  # <dataset>: batch_id and run come back as columns
    return spark.read.option("basePath", base).parquet(*uris)


def clean_superseded(spark, commit_folder: str, data_folders: Iterable[str], run_id: str) -> list[str]:
    """After run_id committed in commit_folder: delete, in each data folder (the commit folder's
    own outputs and any others the commit names, e.g. the rejects' batch folder), the runs older
    than it that are neither current nor the previous current (killed runs, old versions), and
    the older commits. Returns what went."""
    root = layout.root_of_batch_folder(commit_folder)
    outside = [folder for folder in data_folders if root and not folder.startswith(root)]
    if outside:  # a copied lake's commit once sent an operator into the original: never delete there
        raise ValueError(f"refusing to clean {outside}: outside the lake {root}")
    runs = committed_runs(spark, commit_folder)
    keep = set(runs[-2:]) | {run_id}
    for old in runs[:-2]:
        if old < run_id:
            hadoop_fs.delete(spark, layout.commit_path(commit_folder, old))
    deleted = []
    prefix = f"{layout.RUN_PARTITION}="
    for folder in data_folders:
        for name in hadoop_fs.list_names(spark, folder):
            if name.startswith(prefix) and name[len(prefix) :] < run_id and name[len(prefix) :] not in keep:
                hadoop_fs.delete(spark, f"{folder.rstrip('/')}/{name}")
                deleted.append(f"{folder.rstrip('/')}/{name}")
    return deleted


def clean_older_children(spark, parent_uri: str, run_id: str) -> list[str]:
    """Delete the children of parent_uri named by a run id older than run_id (e.g. staging folders
    of killed runs)."""
    gone = [f"{parent_uri.rstrip('/')}/{name}" for name in hadoop_fs.list_names(spark, parent_uri) if name < run_id]
    for uri in gone:
        hadoop_fs.delete(spark, uri)
    return gone


def clean_spaces(spark, pca_uri: str, run_id: str) -> list[str]:
    """After run_id committed in pca/: delete what is older than run_id and that neither it nor the
    previous commit names, nor the previous space (kept whole, so a reader who resolved it just before
    the switch can finish): older commits and spaces, vectors versions, run folders and index pieces,
    killed runs' leftovers, and the per-batch PCA folders of the layout before spaces."""
    root = layout.root_of_batch_folder(pca_uri)
    runs = committed_runs(spark, pca_uri)
    keep = [read_commit(spark, pca_uri, run, layout.PCA) for run in runs[-2:]]
    named = {uri.rstrip("/") for commit in keep for uri in _named_uris(commit)}
    for old in runs[:-2]:
        if old < run_id:
            hadoop_fs.delete(spark, layout.commit_path(pca_uri, old))
    deleted = []

    def drop(uri: str) -> None:
        if root and not uri.startswith(root):  # never outside the lake (a copied lake's commit)
            raise ValueError(f"refusing to clean {uri}: outside the lake {root}")
        hadoop_fs.delete(spark, uri)
        deleted.append(uri)

    spaces_uri = f"{pca_uri}/{layout.SPACES_DIR}"
    current = keep[-1]["space"]
    kept_spaces = {commit["space"] for commit in keep} | {keep[-1].get("previous_space")}
    spaces = set(hadoop_fs.list_names(spark, spaces_uri))
    # A space's vectors may outlive its folder (a run killed between the two deletes): listed too.
    with_vectors = {
        s for s in hadoop_fs.list_names(spark, layout.vectors_table(pca_uri)) if not s.startswith(("_", "."))
    }
    for space in sorted(s for s in spaces | with_vectors if s not in kept_spaces and s < run_id):
        for uri in (layout.space_vectors(pca_uri, space), layout.space_folder(pca_uri, space)):
            if hadoop_fs.exists(spark, uri):
                drop(uri)
    if current in spaces:  # the previous space stays whole until the next switch
        space, space_uri = current, layout.space_folder(pca_uri, current)
        # Only where the last two runs added: a run's leftovers are under the batches it was adding
        # (a killed refit's, in a space no commit names, go with it), so no listing per batch of the lake.
        added = sorted({b for commit in keep for b in commit.get("added", [])})
        for batch in added:
            for run in hadoop_fs.list_names(spark, f"{layout.space_vectors(pca_uri, space)}/{batch}"):
                if run < run_id and layout.vectors_folder(pca_uri, space, batch, run) not in named:
                    drop(layout.vectors_folder(pca_uri, space, batch, run))
        for run in hadoop_fs.list_names(spark, f"{space_uri}/{layout.SPACE_RUNS_DIR}"):
            if run < run_id and layout.space_run_folder(pca_uri, space, run) not in named:
                drop(layout.space_run_folder(pca_uri, space, run))
        for batch in added:
            for name in hadoop_fs.list_names(spark, f"{space_uri}/{layout.INDEX_DIR}/{batch}"):
                run = name.split(".", 1)[0]
                if run < run_id and layout.vectors_folder(pca_uri, space, batch, run) not in named:
                    drop(f"{space_uri}/{layout.INDEX_DIR}/{batch}/{name}")
    for name in hadoop_fs.list_names(spark, pca_uri):
        if name.startswith(layout.partition("")):  # pca/batch_id=<id>/: the layout before spaces
            drop(f"{pca_uri}/{name}")
    return deleted


def _named_uris(commit: dict) -> list[str]:
    """The folders and files a PCA commit names (its references, resolved)."""
    found = [commit["state"].rsplit("/", 1)[0], *commit["vectors"].values()]
    return found
