"""The lake's path grammar: where everything lives in the bucket (and, for backend=local, in the lake
folder standing for it), defined once for both sides. Standard library only: the Airflow side builds
keys with it, the jobs build URIs with it (they ship this package), and readers parse it back.

    raw/batch_id=<id>/shard-<nnnnn>.parquet            a batch's photos packed in Parquet shards (rows of
                                                       contract.SHARD_COLUMNS), ~128 MB each; or, for batches
    raw/batch_id=<id>/<[Training|Test/]Class>/<file>   ingested before shards, one object per photo (the
                                                       manifest's "layout" says which). Either way a photo's
                                                       logical key is the latter: its `path` downstream.
                                                       One prefix per batch: a job reads exactly one batch
    manifests/batch_id=<id>.json                       what a batch holds (keys, sizes, sha256, skips);
                                                       written last, so it also marks "ingest finished"
    manifests/batch_id=<id>.held.parquet               the sha256 of every photo the batch lists (32 bytes
                                                       each), written just before the manifest: what
                                                       ingest reads to know which photos are held
    manifests/held/catalog.json, pieces/*.parquet      those files merged in tiers (held_index.py): what
                                                       ingest reads, a handful of files however many batches
    manifests/batch_id=<id>.lease                      who may publish the batch: the token and generation its
                                                       run's ingest issued (none once revoked), which the
                                                       tables' logs fence (tables.fence_table)
    code/<version>/...                                 the jobs' bundle; version = content hash, so a run
                                                       always executes the code it staged, never a newer one
    wheels/<lock sha256>/                              the jobs' wheels for clusters without internet
    models/<file>.weights.h5                           ImageNet weights for clusters without internet
    models/mobilenet_v2_<sha256>_<size>px_<exporter>.onnx  their ONNX export, made once by the features job
    features/batch_id=<id>/run=<run>/                  Spark outputs, one folder per batch and run, inside
    rejects/batch_id=<id>/run=<run>/                   the features and rejects Delta tables (tables.py): a
                                                       batch is published once the features table's log
                                                       names its files; their run= folder names its run
    batch_runs/batch_id=<id>/<run>.json                the run's record (counts, inputs, weights), written
    batch_runs/batch_id=<id>/<run>.moments.npz         before the tables' commits, and its moments (count,
                                                       mean, scatter; per-class sums: what the PCA merges).
                                                       Outside the tables' folders, which a full vacuum
                                                       empties of anything their log does not list
    batch_runs/_staging/<run>/, batch_runs/_progress/  the features job's one model pass, and its progress
    pca/spaces/<space>/                                one space (its id: the run that fitted it): model/
                                                       (Spark ML), basis.npz, fit-time plots, and
    vectors/<space>/<batch id>/<run>/                  each batch's vectors in a space (plain folder names:
                                                       no key=value for hive-partitioned readers to trip on);
                                                       vectors/ is the vectors Delta table (tables.py)
    pca/spaces/<space>/confusion/<batch id>/<run>.json  those vectors' Test photos' (class, predicted) counts
    pca/spaces/<space>/runs/<run>/                     each run's metrics.json (its record: the space, each
                                                       batch's vectors and features run in it), state.npz
                                                       (running totals), class_quality.png; the vectors
                                                       table's newest run names the current one; and
                                                       run_report.json, which publish_summary writes after
                                                       (nothing names it, no job reads it)
    pca/spaces/<space>/index/catalog.json, pieces/*    the vector index: pieces merged in tiers (fruits similar)
    logs/emr/                                          EMR LogUri (step stdout/stderr, bootstrap logs)

A path here is a key ("features/") or a URI ("s3://bucket/features", "/lake/features"): the folder
builders below append to either. Prefixes, not buckets, separate the kinds of data so one
least-privilege policy can grant each its own verbs (AirflowPolicy in infra/aws/fruits.yaml).
"""

import re
from collections.abc import Iterable

# ---- Dataset prefixes and file names ---------------------------------------------------------

RAW = "raw/"
MANIFESTS = "manifests/"
CODE = "code/"
WHEELS = "wheels/"
MODELS = "models/"
# Training photos --precision int8 calibrates on (a few hundred; fruits_jobs/model.py, quantize_int8)
CALIBRATION = f"{MODELS}calibration/"
FEATURES = "features/"
REJECTS = "rejects/"
# The features job's side files: outside the tables' folders, since a table's full vacuum deletes
# whatever its log does not list (tables.vacuum).
BATCH_RUNS = "batch_runs/"
# Written once a lake's layout is the tables' (fruits.lake.migrate): a run then reads this one key.
LAYOUT_MARKER = BATCH_RUNS + "_layout.json"
PCA = "pca/"
EMR_LOGS = "logs/emr/"
PCA_METRICS_FILE = "metrics.json"
# Not metrics.json: a file a commit names never changes after the commit (on a local lake, Hadoop's
# .crc beside it would no longer match, and the next job reading it fails its checksum).
RUN_REPORT_FILE = "run_report.json"
PCA_MODEL_DIR = "model"
MOMENTS_SUFFIX = ".moments.npz"
SPACES_DIR = "spaces"
BASIS_FILE = "basis.npz"  # components, spectrum and fitted mean, for readers without Spark (fruits similar)
STATE_FILE = "state.npz"  # the space's running totals after a run: moments and per-class sums
VECTORS = "vectors/"  # the vectors Delta table, beside pca/: <space>/<batch>/<run>/ inside it
SPACE_RUNS_DIR = "runs"
INDEX_DIR = "index"
CONFUSION_DIR = "confusion"
PCA_PLOTS = {
    "explained_variance": "explained_variance.png",
    "scatter": "pca_scatter.png",
    "class_quality": "class_quality.png",
}  # the last one only when the photos have labels
DEFAULT_WEIGHTS_FILE = "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"

# ---- Batches, runs and commits ---------------------------------------------------------------

PARTITION_COLUMN = "batch_id"
# A batch folder holds one folder per run (run=<run id>/) and, written last, one commit per run
# (_commits/<run id>.json): the newest commit names the batch's current outputs (commits.py).
RUN_PARTITION = "run"
COMMITS_DIR = "_commits"
COMMIT_SUFFIX = ".json"
STAGING_DIR = "_staging"  # <batch_runs>/_staging/<run id>/: the one model pass, before the split
# The features job's progress while it runs (images done, rate, time left), one small JSON per batch
# under batch_runs/, rewritten every few seconds: what the EMR sensor shows in its log.
PROGRESS_DIR = "_progress"


def partition(batch_id: str) -> str:
    """A batch's Hive-style folder name under any dataset: batch_id=<id>."""
    return f"{PARTITION_COLUMN}={batch_id}"


def batch_folder(dataset: str, batch_id: str) -> str:
    """<dataset>/batch_id=<id> (no trailing slash), for a dataset key or URI."""
    return f"{dataset.rstrip('/')}/{partition(batch_id)}"


def run_folder(folder: str, run_id: str) -> str:
    """Where one run writes: <folder>/run=<run id> (folder: a batch folder, or a PCA output)."""
    return f"{folder.rstrip('/')}/{RUN_PARTITION}={run_id}"


def commits_folder(folder: str) -> str:
    return f"{folder.rstrip('/')}/{COMMITS_DIR}"


def commit_path(folder: str, run_id: str) -> str:
    return f"{commits_folder(folder)}/{run_id}{COMMIT_SUFFIX}"


# A run id (commits.new_run_id): the UTC time to the millisecond, then a random tail. Only a file
# named <run id>.json in _commits/ is a commit: a note saved there is not one, whatever it holds.
RUN_ID = re.compile(r"\d{8}T\d{9}Z-[0-9a-f]{1,32}")


def committed_runs(names: Iterable[str]) -> list[str]:
    """The run ids of a _commits folder's file names, oldest first: the last is the current run.
    (Run ids start with the UTC time; a name starting with '.' is a commit still being written.)"""
    return sorted(n[: -len(COMMIT_SUFFIX)] for n in names if is_commit_name(n))


def is_commit_name(name: str) -> bool:
    return name.endswith(COMMIT_SUFFIX) and RUN_ID.fullmatch(name[: -len(COMMIT_SUFFIX)]) is not None


def stray_names(names: Iterable[str]) -> list[str]:
    """What a _commits folder holds that is neither a commit nor one being written: ignored, and said."""
    return sorted(n for n in names if not is_commit_name(n) and not n.startswith("."))


def parse_commit_key(key: str, dataset: str) -> tuple[str, str] | None:
    """(batch id, run id) of <dataset>batch_id=<id>/_commits/<run>.json, else None."""
    parts = key[len(dataset) :].split("/") if key.startswith(dataset) else []
    if len(parts) != 3 or not parts[0].startswith(partition("")) or parts[1] != COMMITS_DIR:
        return None
    runs = committed_runs([parts[2]])
    return (parts[0][len(partition("")) :], runs[0]) if runs else None


def progress_name(batch_id: str) -> str:
    """The progress file of a batch, under batch_runs/."""
    return f"{PROGRESS_DIR}/{partition(batch_id)}.json"


def batch_runs_of(features: str) -> str:
    """The batch_runs folder beside a features table (<root>/features: <root>/batch_runs; the key
    features/: batch_runs); a features folder outside a lake's layout gets one beside it too."""
    parent = features.rstrip("/").rpartition("/")[0]
    return f"{parent}/{BATCH_RUNS.rstrip('/')}" if parent else BATCH_RUNS.rstrip("/")


def record_path(batch_runs: str, batch_id: str, run_id: str) -> str:
    """A features run's record: <batch_runs>/batch_id=<id>/<run>.json."""
    return f"{batch_folder(batch_runs, batch_id)}/{run_id}{COMMIT_SUFFIX}"


def moments_path(batch_runs: str, batch_id: str, run_id: str) -> str:
    """A features run's moments, beside its record."""
    return f"{batch_folder(batch_runs, batch_id)}/{run_id}{MOMENTS_SUFFIX}"


def is_data_file(name: str) -> bool:
    """A Parquet file Spark wrote (part-…parquet), not _SUCCESS, a .crc or a side file: what a table adds."""
    return name.startswith("part-") and name.endswith(".parquet")


def run_of_file(path: str) -> tuple[str, str] | None:
    """(batch id, run id) of a table's data file (…/batch_id=<id>/run=<run>/part-…: a path relative to
    the table, or a URI), else None: a batch's current run is the run= folder of its current files."""
    parts = path.split("/")
    batch, run = partition(""), f"{RUN_PARTITION}="
    if len(parts) >= 3 and parts[-3].startswith(batch) and parts[-2].startswith(run):
        return parts[-3][len(batch) :], parts[-2][len(run) :]
    return None


# ---- Keys of the bucket ------------------------------------------------------------------------


def batch_prefix(dataset: str, batch_id: str) -> str:
    """A batch's Hive-style partition under one of the prefixes above (raw/, features/, ...)."""
    return batch_folder(dataset, batch_id) + "/"


def raw_prefix(batch_id: str) -> str:
    return batch_prefix(RAW, batch_id)


def manifest_key(batch_id: str) -> str:
    return f"{MANIFESTS}{partition(batch_id)}.json"


SHARD_PREFIX, SHARD_SUFFIX = "shard-", ".parquet"


def shard_name(index: int) -> str:
    """The file name of a packed batch's shard number index (0, 1, ...): sorts in order."""
    return f"{SHARD_PREFIX}{index:05d}{SHARD_SUFFIX}"


def shard_key(batch_id: str, index: int) -> str:
    return raw_prefix(batch_id) + shard_name(index)


def shard_index(key: str) -> int | None:
    """The number of a shard's key or name; None for anything else (a loose photo's key)."""
    name = key.rpartition("/")[2]
    number = name[len(SHARD_PREFIX) : -len(SHARD_SUFFIX)]
    if name.startswith(SHARD_PREFIX) and name.endswith(SHARD_SUFFIX) and number.isdigit():
        return int(number)
    return None


def held_index_key(batch_id: str) -> str:
    """The batch's held-photo index (sha256 of every photo its manifest lists), beside the manifest."""
    return f"{MANIFESTS}{partition(batch_id)}.held.parquet"


HELD_INDEX = f"{MANIFESTS}held/"
HELD_PIECES = f"{HELD_INDEX}pieces/"


def held_catalog_key() -> str:
    """The held-photo index's catalog: its pieces and their members (batch -> version)."""
    return f"{HELD_INDEX}catalog.json"


def held_piece_key(name: str) -> str:
    return f"{HELD_PIECES}{name}.parquet"


def batch_of_manifest(key: str) -> str | None:
    """The batch of a manifest's key; None for the other objects under manifests/ (leases)."""
    name = key[len(MANIFESTS) :]
    if not (key.startswith(MANIFESTS) and name.startswith(partition("")) and name.endswith(".json")):
        return None
    return name[len(partition("")) : -len(".json")]


def batch_of_lease(key: str) -> str:
    """The batch of a lease's key (lease_key's inverse), or ValueError."""
    name = key[len(MANIFESTS) :]
    if not (key.startswith(MANIFESTS) and name.startswith(partition("")) and name.endswith(".lease")):
        raise ValueError(f"{key} is not a batch's lease (manifests/batch_id=<id>.lease)")
    return name[len(partition("")) : -len(".lease")]


def lease_key(batch_id: str) -> str:
    """The batch's lease, beside its manifest (the same grants: Airflow writes, the jobs read)."""
    return f"{MANIFESTS}{partition(batch_id)}.lease"


def code_prefix(version: str) -> str:
    return f"{CODE}{version}/"


# ---- The embedding spaces under pca/ (a URI or a key of the pca/ folder) ------------------------


def space_folder(pca: str, space: str) -> str:
    return f"{pca.rstrip('/')}/{SPACES_DIR}/{space}"


def vectors_table(pca: str) -> str:
    """The vectors Delta table, beside the pca folder (<root>/pca: <root>/vectors; the key pca/: vectors)."""
    root = pca.rstrip("/").rpartition("/")[0]
    return f"{root}/{VECTORS.rstrip('/')}" if root else VECTORS.rstrip("/")


def space_vectors(pca: str, space: str) -> str:
    """Every batch's vectors in one space, inside the vectors table."""
    return f"{vectors_table(pca)}/{space}"


def vectors_folder(pca: str, space: str, batch_id: str, run_id: str) -> str:
    """One batch's vectors in one space, as written by one run (a re-published batch: a new run)."""
    return f"{space_vectors(pca, space)}/{batch_id}/{run_id}"


def space_run_folder(pca: str, space: str, run_id: str) -> str:
    """What one run of the PCA job leaves in the space: metrics.json, state.npz, class_quality.png."""
    return f"{space_folder(pca, space)}/{SPACE_RUNS_DIR}/{run_id}"


def space_record_path(pca: str, space: str, run_id: str) -> str:
    """A PCA run's record, its metrics.json: written before the vectors table's commit, which names
    the run through its files' folders (vectors_of_file)."""
    return f"{space_run_folder(pca, space, run_id)}/{PCA_METRICS_FILE}"


def vectors_of_file(path: str) -> tuple[str, str, str] | None:
    """(space, batch id, run id) of a vectors table file (…/<space>/<batch>/<run>/part-…), else None."""
    parts = path.split("/")
    if len(parts) < 4 or not RUN_ID.fullmatch(parts[-2]) or not RUN_ID.fullmatch(parts[-4]):
        return None
    return parts[-4], parts[-3], parts[-2]


def run_report_path(metrics_uri: str) -> str:
    """The run report of the PCA run whose metrics.json is metrics_uri: beside it, in a file of its own."""
    return f"{metrics_uri.rsplit('/', 1)[0]}/{RUN_REPORT_FILE}"


def confusion_path(vectors_folder_uri: str) -> str:
    """The confusion counts of a batch's vectors (vectors/<space>/<batch>/<run>), in the space's
    folder: pca/spaces/<space>/confusion/<batch>/<run>.json (never inside the vectors table)."""
    root, space, batch, run = vectors_folder_uri.rstrip("/").rsplit("/", 3)
    pca = f"{root.rpartition('/')[0]}/{PCA.rstrip('/')}" if "/" in root else PCA.rstrip("/")
    return f"{space_folder(pca, space)}/{CONFUSION_DIR}/{batch}/{run}{COMMIT_SUFFIX}"


def commits_prefix(dataset: str, batch_id: str) -> str:
    """A batch's commits (features/ or pca/): the newest names the batch's current outputs."""
    return commits_folder(batch_folder(dataset, batch_id)) + "/"


def progress_key(batch_id: str) -> str:
    """Where the features job keeps its progress while it runs (the EMR sensor logs it)."""
    return BATCH_RUNS + progress_name(batch_id)


def staged_weights_key(sha256: str, suffix: str) -> str:
    """A weights file staged by content: a new file, a new key; the same file, staged once."""
    return f"{MODELS}{sha256}{suffix}"


def wheels_prefix(lock_sha256: str) -> str:
    """The jobs' wheels for one lock file (make wheelhouse): staged once per closure, not per code."""
    return f"{WHEELS}{lock_sha256}/"


# ---- References: what a commit names, relative to its lake ---------------------------------------
# A commit names its outputs by their path under the lake's root ("features/batch_id=b/run=r"), and a
# reader resolves them against the lake it was given: a copied, moved or restored lake reads (and
# cleans) itself, never the one it was copied from.
_IN_A_BATCH = re.compile(
    r"/((?:raw|features|rejects|batch_runs|pca)/batch_id=[^/]+(?:/.*)?|pca/spaces/[^/]+(?:/.*)?|vectors/[^/]+/[^/]+/[^/]+(?:/.*)?)$"
)


def lake_root(dataset_uri: str, dataset: str) -> str | None:
    """The root URI (with its slash) of a dataset folder named as this layout names it, else None."""
    uri, name = dataset_uri.rstrip("/"), dataset.rstrip("/")
    return uri[: -len(name)] if uri.endswith("/" + name) else None


def root_of(dataset_uri: str, dataset: str) -> str:
    """lake_root, or ValueError: a reader of a lake needs its root (leases, references)."""
    root = lake_root(dataset_uri, dataset)
    if root is None:
        raise ValueError(f"{dataset_uri} is not a {dataset} folder of the lake's layout")
    return root


def refer(uri: str, root: str | None) -> str:
    """What a commit stores for uri: its path under the lake's root (as is outside any lake)."""
    return uri[len(root) :] if root and uri.startswith(root) else uri


def resolve(ref: str, root: str) -> str:
    """A commit's reference as a URI of the lake at root. A relative one is joined to it; an absolute
    one (written before references were relative, or copied from another lake) is rebased on the
    path the layout gives it, so it never reaches another lake."""
    if "://" not in ref and not ref.startswith(("/", "file:")):
        return root + ref
    found = _IN_A_BATCH.search(ref.rstrip("/"))
    return root + found.group(1) if found else ref


# The keys of a commit (and of metrics.json) that name a place: references, relative to the lake.
REFERENCE_KEYS = (
    "images",
    "features",
    "rejects",
    "output",
    "reduced",
    "model",
    "plots",
    "moments",
    "metrics",
    "vectors",
    "basis",
    "state",
    "space_folder",
)
_BATCH_FOLDER = re.compile(r"^(.*/)(?:(?:features|rejects|batch_runs|pca)/batch_id=[^/]+|pca)/?$")


def root_of_batch_folder(folder_uri: str) -> str | None:
    """The lake's root of a folder holding commits (<root>/<dataset>/batch_id=<id>, or <root>/pca),
    else None (a folder outside any lake)."""
    found = _BATCH_FOLDER.match(folder_uri)
    return found.group(1) if found else None


def _map_references(record: dict, change) -> dict:
    def one(value):
        if isinstance(value, str):
            return change(value)
        if isinstance(value, dict):
            return {k: one(v) for k, v in value.items()}
        return value

    return {k: one(v) if k in REFERENCE_KEYS else v for k, v in record.items()}


def refer_record(record: dict, root: str | None) -> dict:
    """A record as a commit stores it: its references relative to the lake's root."""
    return _map_references(record, lambda uri: refer(uri, root))


def resolve_record(record: dict, root: str) -> dict:
    """A commit as a reader of the lake at root uses it: its references resolved in that lake."""
    return _map_references(record, lambda ref: resolve(ref, root))


def s3_uri(bucket: str, key: str = "") -> str:
    return f"s3://{bucket}/{key}"
