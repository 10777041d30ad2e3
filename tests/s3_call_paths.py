"""Every S3 call the pipeline makes, by role: the one list the policy tests check against both IAM
policies of infra/aws/fruits.yaml (tests/test_iam_policy.py), under S3's rule that a missing key is a
403, not a 404, for a caller who may not list the bucket (iam_eval.s3_missing_key_error).

Keep it current when a layout changes (raw/, pca/, ...): each entry is one (operation, key) pattern,
`*` standing for any characters. The `aws` fixture fails every moto-driven test whose DAG makes an
S3 call that AIRFLOW lacks, naming it, so the Airflow side cannot drift. The EMR side cannot be
recorded here (no hadoop-aws jars; local Hadoop is 3.3.4, EMR 7's is 3.4): EMR_INSTANCE is read
from the jobs' code (spark_jobs/fruits_jobs/hadoop_fs.py and the jobs' paths) and from how S3A
turns a file system call into S3 requests (Hadoop, hadoop-aws: S3AFileSystem.s3GetFileStatus probes
HEAD <key>, then LIST <key>/; older releases also HEAD <key>/, a directory marker; rename is COPY
then DELETE; assumed_roles.md, "Restricting S3A operations": reading needs s3:Get* and
s3:ListBucket, writing also s3:Put*, s3:Delete*, s3:ListBucketMultipartUploads, s3:AbortMultipartUpload).
"""

from typing import NamedTuple


class Call(NamedTuple):
    operation: str  # the S3 API operation (a listing is ListObjectsV2, its key the Prefix)
    key: str  # a key pattern: `*` is any characters
    missing: bool  # the key may not exist when asked: S3 must answer 404 (not 403) for the code to go on
    by: str  # who makes it, for the failure message


def read(key: str, by: str, missing: bool = False) -> list[Call]:
    """S3Hook.read_key: HEAD, then GET (boto3's Object.load(), then get())."""
    return [Call("HeadObject", key, missing, by), Call("GetObject", key, missing, by)]


def delta_read(table: str, by: str) -> list[Call]:
    """delta-rs loading a Delta table's current version (object_store, not boto3): _last_checkpoint
    (missing until the first checkpoint), a listing of _delta_log/, the entries and checkpoint."""
    log = f"{table}/_delta_log"
    return [
        Call("GetObject", f"{log}/_last_checkpoint", True, by),
        Call("ListObjectsV2", f"{log}/", False, by),
        Call("GetObject", f"{log}/*", False, by),
    ]


# ---- What Airflow's role does (the DAG's tasks, plugins/fruits) -------------------------------------
AIRFLOW: list[Call] = [
    # preflight (plugins/fruits/backends/emr/preflight.py)
    Call("GetBucketLocation", "", False, "preflight.check_bucket"),
    Call("ListObjectsV2", "models/*", False, "preflight.check_weights"),
    Call("ListObjectsV2", "code/*/", False, "preflight.check_code, stage_code (upload_missing)"),
    # the first task names a weights file by its bytes' sha256 (plugins/fruits/lake/extractor.py;
    # download_file: HEAD, then GET)
    *read("models/*.weights.h5", "extractor.weights_sha256"),
    *read("models/*.onnx", "extractor.weights_sha256"),
    # ingest and leases (plugins/fruits/lake/ingest.py, leases.py): listings first, then reads
    Call("ListObjectsV2", "manifests/", False, "ingest.next_free_batch_id"),
    Call("ListObjectsV2", "manifests/batch_id=*.json", False, "ingest.stored_manifest"),
    *read("manifests/batch_id=*.json", "ingest.parse_manifest"),
    Call("PutObject", "manifests/batch_id=*.json", False, "ingest.ingest (the manifest, last)"),
    # the held-photo index (plugins/fruits/lake/held_index.py): each batch's file, written before the
    # manifest; the catalog and its pieces, which ingest reads, merged in tiers (retired pieces deleted)
    Call("PutObject", "manifests/batch_id=*.held.parquet", False, "held_index.record"),
    *read("manifests/batch_id=*.held.parquet", "held_index.read_batch_file"),
    Call("ListObjectsV2", "manifests/batch_id=*.held.parquet", False, "ingest.batch_hashes"),
    Call("ListObjectsV2", "manifests/held/catalog.json", False, "held_index.read_catalog"),
    Call("GetObject", "manifests/held/catalog.json", False, "held_index.read_catalog"),
    Call("PutObject", "manifests/held/catalog.json", False, "held_index.switch"),
    Call("ListObjectsV2", "manifests/held/pieces/", False, "held_index.switch (retired pieces)"),
    Call("PutObject", "manifests/held/pieces/*.parquet", False, "held_index.switch"),
    Call("GetObject", "manifests/held/pieces/*.parquet", False, "held_index.lookup, switch"),
    Call("DeleteObject", "manifests/held/pieces/*.parquet", False, "held_index.switch (retired pieces)"),
    # a packed batch's shards (plugins/fruits/lake/packing.py): a resumed ingest asks what each holds
    Call("HeadObject", "raw/batch_id=*/shard-*.parquet", True, "ingest (resume: the stored shard's sha256)"),
    Call("ListObjectsV2", "manifests/batch_id=*.lease", False, "leases.current_token"),
    *read("manifests/batch_id=*.lease", "leases.current_token"),
    Call("PutObject", "manifests/batch_id=*.lease", False, "leases.issue, revoke_lease (sensor, teardown)"),
    # leases.fence_tables: a new lease of a batch that had one is recorded in the tables' logs
    # (delta-rs, with the connection's credentials; the first fence creates the tables)
    *(
        call
        for table in ("features", "rejects")
        for call in (
            *delta_read(table, "leases.fence_tables (delta-rs)"),
            Call("PutObject", f"{table}/_delta_log/*", False, "leases.fence_tables (delta-rs)"),
        )
    ),
    Call("ListObjectsV2", "raw/batch_id=*/", False, "ingest.ingest (what is there already)"),
    Call("PutObject", "raw/batch_id=*/*", False, "ingest.ingest (the photos)"),
    Call("CreateMultipartUpload", "raw/batch_id=*/*", False, "ingest.ingest (a photo over 8 MB)"),
    # stage_code (plugins/fruits/pipeline.py, backends/emr/backend.py)
    Call("PutObject", "code/*/*", False, "stage_code"),
    Call("ListObjectsV2", "models/*.weights.h5", False, "EmrBackend.stage (a local weights file)"),
    Call("PutObject", "models/*.weights.h5", False, "EmrBackend.stage"),
    Call("ListObjectsV2", "models/*.onnx", False, "on_s3.stage_weights (an .onnx model file)"),
    Call("PutObject", "models/*.onnx", False, "on_s3.stage_weights"),
    Call("ListObjectsV2", "wheels/*/", False, "EmrBackend.stage (the wheelhouse)"),
    Call("PutObject", "wheels/*/*", False, "EmrBackend.stage"),
    # the sensors (plugins/fruits/backends/emr/operators.py): both may ask before the file exists
    Call("GetObject", "batch_runs/_progress/batch_id=*.json", True, "StepSensor.log_progress"),
    Call("GetObject", "logs/emr/*/steps/*/stderr.gz", True, "StepSensor._stderr_tail"),
    # ... and emr_serverless' (backends/emr_serverless/operators.py): the driver's log under the job's logUri
    Call("GetObject", "logs/emr-serverless/applications/*/jobs/*/SPARK_DRIVER/stderr.gz", True, "JobRunSensor"),
    # published batches (plugins/fruits/lake/published.py, summary.py): the features table's log names
    # each batch's run, whose record is then read
    *delta_read("features", "published.published_runs (delta-rs)"),
    Call("ListObjectsV2", "batch_runs/batch_id=*/*.json", False, "published.read_record"),
    *read("batch_runs/batch_id=*/*.json", "published.read_record"),
    # the lake's layout marker (plugins/fruits/lake/migrate.py): read each run, written once; without
    # it, one listing of features/ for commits of the layout before the tables
    Call("ListObjectsV2", "batch_runs/_layout.json", False, "migrate.check_layout"),
    Call("ListObjectsV2", "features/", False, "migrate.check_layout (once)"),
    Call("PutObject", "batch_runs/_layout.json", False, "migrate.check_layout (once)"),
    # -- pca/: the current embedding space (issue 20), the run report beside its run's metrics, the index --
    *delta_read("vectors", "published.current_space (delta-rs)"),
    Call("ListObjectsV2", "pca/spaces/*/runs/*/metrics.json", False, "published.current_space"),
    *read("pca/spaces/*/runs/*/metrics.json", "published.current_space"),
    Call("PutObject", "pca/spaces/*/runs/*/run_report.json", False, "summary.write_run_report"),
    Call("ListObjectsV2", "pca/spaces/*/index/", False, "vector_index.build_missing_pieces"),
    Call("ListObjectsV2", "vectors/*/*/*/", False, "vector_index.build_missing_pieces"),
    *read("vectors/*/*/*/*", "vector_index.build_missing_pieces"),
    Call("PutObject", "pca/spaces/*/index/*", False, "vector_index.build_missing_pieces"),
    Call("ListObjectsV2", "pca/spaces/*/index/catalog.json", False, "vector_index.read_catalog"),
    Call("GetObject", "pca/spaces/*/index/catalog.json", False, "vector_index.read_catalog"),
    Call("DeleteObject", "pca/spaces/*/index/*", False, "vector_index.build_missing_pieces (retired pieces)"),
    *read("pca/spaces/*/index/*", "vector_index.search (fruits similar on an s3:// lake)"),
    Call("CreateMultipartUpload", "pca/spaces/*/index/*", False, "vector_index.build_missing_pieces (a large piece)"),
]


# ---- What the EMR nodes' role does (the Spark jobs through S3A, and EMR itself) ---------------------
def probe(path: str, by: str) -> list[Call]:
    """S3A's getFileStatus (exists, and the first step of open, create, rename, delete, listStatus):
    HEAD <key>, HEAD <key>/, LIST <key>/ (S3AFileSystem.s3GetFileStatus). Any of them may miss."""
    return [
        Call("HeadObject", path, True, by),
        Call("HeadObject", path + "/", True, by),
        Call("ListObjectsV2", path + "/", True, by),
    ]


def s3a_read(key: str, by: str) -> list[Call]:
    return [*probe(key, by), Call("GetObject", key, False, by)]


def s3a_create(key: str, by: str) -> list[Call]:
    """FileSystem.create(overwrite): the path's probe, then PUT (or a multipart upload)."""
    return [*probe(key, by), Call("PutObject", key, False, by), Call("CreateMultipartUpload", key, False, by)]


def s3a_rename(src: str, dst: str, by: str) -> list[Call]:
    """rename: probe both, COPY (GetObject on the source, PutObject on the destination), DELETE."""
    copy = [Call("GetObject", src, False, by), Call("PutObject", dst, False, by)]
    return [*probe(src, by), *probe(dst, by), *copy, Call("DeleteObject", src, False, by)]


def s3a_tree(folder: str, by: str) -> list[Call]:
    """A folder Spark writes (or the jobs delete): probe, list, PUT and DELETE of the files under it."""
    files = f"{folder}/*"
    return [
        *probe(folder, by),
        Call("PutObject", files, False, by),
        Call("DeleteObject", files, False, by),
        Call("AbortMultipartUpload", files, False, by),
    ]


def atomic_write(folder: str, name: str, by: str) -> list[Call]:
    """hadoop_fs.write_bytes_atomically: create <folder>/.<hex>.<name>, rename it to <folder>/<name>."""
    hidden = f"{folder}/.*.{name}"
    return [*s3a_create(hidden, by), *s3a_rename(hidden, f"{folder}/{name}", by)]


def delta_vacuum(table: str, by: str) -> list[Call]:
    """delta-rs's full vacuum (tables.vacuum): a listing of the whole table folder, then a DELETE of
    each file no version within the retention lists; its start and end are log entries."""
    return [
        Call("ListObjectsV2", f"{table}/", False, by),
        Call("DeleteObject", f"{table}/*", False, by),
        Call("PutObject", f"{table}/_delta_log/*", False, by),
    ]


def delta_commit(table: str, files: str, by: str) -> list[Call]:
    """delta-rs publishing into the Delta table at <table>/ (fruits_jobs/tables.py). It talks to S3
    itself (object_store, not boto3), so these are from its log store as documented and as seen
    against moto's server (tests/test_tables.py): read _last_checkpoint, list _delta_log/, read the
    entries, write the next one with If-None-Match; its post-commit hook writes a checkpoint every
    100 commits (delta.checkpointInterval) and then deletes expired log entries. pyarrow reads each
    new file's footer."""
    log = f"{table}/_delta_log"
    return [
        Call("GetObject", f"{log}/_last_checkpoint", True, by),  # missing until the first checkpoint
        Call("ListObjectsV2", f"{log}/", False, by),
        Call("GetObject", f"{log}/*", False, by),
        Call("PutObject", f"{log}/*", False, by),  # the new entry; checkpoints, _last_checkpoint
        Call("DeleteObject", f"{log}/*", False, by),  # expired log entries, after a checkpoint
        Call("HeadObject", f"{table}/{files}", False, by),
        Call("GetObject", f"{table}/{files}", False, by),
    ]


FEATURES_JOB = "extract_features"
PCA_JOB = "reduce_dimensions"
EMR_INSTANCE: list[Call] = [
    # EMR itself: the bootstrap's `aws s3 cp` (HEAD, then GET), spark-submit's script, the log upload
    *read("code/*/*", "the bootstrap and spark-submit"),
    *read("wheels/*/*", "the bootstrap (a wheelhouse)"),
    Call("PutObject", "logs/emr/*", False, "EMR's log upload"),
    # the features job (spark_jobs/fruits_jobs/features.py, commits.py)
    *probe("raw/batch_id=*", FEATURES_JOB),
    *s3a_read("raw/batch_id=*/*", FEATURES_JOB),
    *s3a_read("manifests/batch_id=*.json", FEATURES_JOB),
    *s3a_read("manifests/batch_id=*.lease", FEATURES_JOB),  # no lease: exists() says False
    *s3a_read("models/*.weights.h5", FEATURES_JOB),
    *s3a_read("models/*.onnx", FEATURES_JOB),  # the ONNX cache, missing on a first run
    *atomic_write("models", "*.onnx", FEATURES_JOB),
    *probe("batch_runs/_progress", FEATURES_JOB),
    *s3a_create("batch_runs/_progress/batch_id=*.json", FEATURES_JOB),
    *s3a_tree("batch_runs/_staging/*", FEATURES_JOB),  # and older runs' staging, past the retention
    *probe("features/batch_id=*", FEATURES_JOB),
    *s3a_tree("features/batch_id=*/run=*", FEATURES_JOB),
    *s3a_tree("rejects/batch_id=*/run=*", FEATURES_JOB),
    *probe("rejects/batch_id=*", FEATURES_JOB),
    # the run's record and moments (before the tables' commits), and the batch's older ones, past the retention
    *atomic_write("batch_runs/batch_id=*", "*.json", FEATURES_JOB),
    *atomic_write("batch_runs/batch_id=*", "*.moments.npz", FEATURES_JOB),
    *probe("batch_runs/batch_id=*", FEATURES_JOB),
    Call("DeleteObject", "batch_runs/batch_id=*/*", False, FEATURES_JOB),
    *delta_commit("rejects", "batch_id=*/run=*/*.parquet", FEATURES_JOB),  # the Delta tables: rejects first
    *delta_commit("features", "batch_id=*/run=*/*.parquet", FEATURES_JOB),
    *delta_vacuum("rejects", FEATURES_JOB),
    *delta_vacuum("features", FEATURES_JOB),
    # the PCA job (spark_jobs/fruits_jobs/pca.py): the features table's log, the changed batches' records,
    # moments and features files
    *probe("features", PCA_JOB),
    *delta_read("features", PCA_JOB),
    *s3a_read("batch_runs/batch_id=*/*.json", PCA_JOB),
    *s3a_read("batch_runs/batch_id=*/*.moments.npz", PCA_JOB),
    *s3a_read("features/batch_id=*/run=*/*", PCA_JOB),
    # -- pca/: the current space (the vectors table's log, then the run's record), its folders (model,
    # basis, runs, index, confusion), the layouts before (pca/_commits/, pca/batch_id=*/) deleted --
    *probe("pca", PCA_JOB),
    *delta_read("vectors", PCA_JOB),
    *atomic_write("pca/spaces/*/runs/*", "metrics.json", PCA_JOB),
    *probe("pca/_commits", PCA_JOB),
    Call("DeleteObject", "pca/_commits/*", False, PCA_JOB),  # the PCA commits before the vectors table
    *probe("pca/spaces", PCA_JOB),
    *s3a_tree("pca/spaces/*", PCA_JOB),  # model/, plots, runs/<run>/, retired spaces
    *probe("vectors", PCA_JOB),
    *s3a_tree("vectors/*", PCA_JOB),  # <space>/<batch>/<run>/, a retired space's vectors
    *delta_commit("vectors", "*/*/*/*.parquet", PCA_JOB),
    *delta_vacuum("vectors", PCA_JOB),
    *s3a_read("pca/spaces/*/basis.npz", PCA_JOB),
    *atomic_write("pca/spaces/*", "basis.npz", PCA_JOB),
    *s3a_read("pca/spaces/*/runs/*/state.npz", PCA_JOB),
    *atomic_write("pca/spaces/*/runs/*", "state.npz", PCA_JOB),
    *s3a_read("pca/spaces/*/runs/*/metrics.json", PCA_JOB),
    *s3a_read("pca/spaces/*/confusion/*/*.json", PCA_JOB),
    *s3a_tree("pca/batch_id=*", PCA_JOB),  # the layout before spaces, deleted by the first space's run
]

# ---- What the EMR Serverless job runtime role does: the same jobs through S3A, with EmrInstancePolicy (one
# policy for both roles), but no bootstrap or wheelhouse (the image holds the jobs' Python): EMR
# Serverless reads the entry point and --py-files with the job's role (User Guide, "Job runtime roles"),
# and writes the job's logs under the logUri of builders.configuration_overrides.
SERVERLESS_JOB: list[Call] = [
    *read("code/*/*", "EMR Serverless (the entry point and --py-files)"),
    Call("PutObject", "logs/emr-serverless/applications/*", False, "EMR Serverless' log upload"),
    *[c for c in EMR_INSTANCE if c.by in (FEATURES_JOB, PCA_JOB)],
]

# Each `*` of a pattern, made concrete to ask a policy about one key.
EXAMPLE = "b-1"


def example_key(pattern: str) -> str:
    return pattern.replace("*", EXAMPLE)
