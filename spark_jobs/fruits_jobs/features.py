"""Step 1: images -> 1280-d MobileNetV2 features (Parquet by batch_id) + rejects with reasons.

Flow: list + read the batch with `binaryFile` -> decode/resize + model in mapInPandas, which folds
the vectors into the batch's moments as they are born (moments.py) -> ONE write of every outcome to
a hidden staging folder -> features and rejects into this run's own folders inside the Delta
tables' folders, with the batch's moments -> the run's record (batch_runs/) -> the rejects table's
commit, then the features table's, which publishes the batch's new version as one unit (tables.py,
commits.py). The staging write is the only pass that runs the model; a run killed before the
features commit leaves the batch's current version as it was, and a later run's vacuum deletes its
leftovers once they are older than the retention.
"""

import argparse
import importlib
import json
import math
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from fruits_jobs import commits, contract, extractors, hadoop_fs, layout, moments, progress, tables
from fruits_jobs import model as mobilenet
from fruits_jobs.common import (
    UsageError,
    add_retention_argument,
    check_batch_id,
    emit_summary,
    session_conf,
    spark_session,
)
from fruits_jobs.digests import file_digests
from fruits_jobs.images import DEFAULT_MAX_PIXELS, decode_many
from fruits_jobs.model import FEATURE_DIM, featurize, worker_infer_fn

if TYPE_CHECKING:
    from pyspark import Accumulator

DEFAULT_MAX_FILE_BYTES = contract.DEFAULT_MAX_FILE_BYTES  # larger files are rejected unread
ROWS_PER_OUTPUT_FILE = 50_000  # ~250 MB of features per Parquet file
# Images per Spark task, at least one task per core. Each task costs ~0.4 s of fixed work (a
# Python round trip, a Parquet file, scheduling: measured), so Spark's default of ~30 small
# files per task wasted a third of the run; 2,000 images is ~20-40 s of model time, cheap to retry.
IMAGES_PER_TASK = 2000
# The staged outcomes: one row per photo, and per model-pass task one row of its moments (no path).
OUTCOME_SCHEMA = (
    "path string, label string, split string, sha256 string, features array<float>, reason string, "
    "detail string, moments binary"
)
OUTCOME_COLUMNS = [column.split()[0] for column in OUTCOME_SCHEMA.split(", ")]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="extract_features.py", description=__doc__.split("\n")[0])
    p.add_argument("--images", help="folder of <[split/]Class>/<file> images (path, file:// or s3://)")
    p.add_argument("--features", required=True, help="features dataset root (Parquet, partitioned by batch_id)")
    p.add_argument("--rejects", required=True, help="rejects dataset root (Parquet, partitioned by batch_id)")
    p.add_argument("--batch-id", help="the batch's id: its partition in both datasets")
    p.add_argument(
        "--weights",
        required=True,
        help="imagenet | a .weights.h5 file | an .onnx model exported by "
        "this job (local path or s3:// URI) | random (tests only)",
    )
    p.add_argument(
        "--engine",
        choices=mobilenet.ENGINES,
        default=extractors.DEFAULT_ENGINE,
        help="what runs the model in the workers (default onnxruntime; tensorflow: the frozen graph)",
    )
    p.add_argument(
        "--model-cache",
        help="folder (e.g. s3://bucket/models/) keeping the ONNX export of a weights "
        "file, by content: later runs with the same weights skip the export",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=extractors.DEFAULT_IMAGE_SIZE,
        help=f"model input size in pixels (default {extractors.DEFAULT_IMAGE_SIZE})",
    )
    p.add_argument(
        "--precision",
        choices=extractors.PRECISIONS,
        default=extractors.DEFAULT_PRECISION,
        help="fp32 (default) or int8: the ONNX graph quantized statically (engine onnxruntime only)",
    )
    p.add_argument(
        "--batch-size", type=int, help=f"images per model call (default: the engine's, {mobilenet.DEFAULT_BATCH_SIZE})"
    )
    p.add_argument(
        "--calibration",
        help="--precision int8: a folder (path or s3:// URI) of Training photos the quantizer calibrates on "
        f"({mobilenet.CALIBRATION_PHOTOS} at most, spread over the sorted paths)",
    )
    p.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES)
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    p.add_argument(
        "--manifest",
        help="the batch's ingest manifest (JSON): read exactly the files it lists, "
        "relative to --images; without it, every file under --images",
    )
    p.add_argument(
        "--lease",
        help="the batch's lease (JSON, written by ingest): the run publishes only under the lease's "
        "generation it started with, which the tables' logs fence (tables.commit_actions)",
    )
    p.add_argument(
        "--refeaturize-published",
        metavar="LAKE",
        help="also every batch the features table publishes, featurized again from its stored photos "
        "(LAKE's raw/ and manifests/), all published with this run's batch in one commit of each table: "
        "how the extractor changes (docs/spark-jobs.md, 'Changing the extractor'); --images and --batch-id optional",
    )
    add_retention_argument(p)
    args = p.parse_args(argv)
    args.batch_size = args.batch_size or mobilenet.DEFAULT_BATCH_SIZE[args.engine]
    if not (args.images and args.batch_id) and not args.refeaturize_published:
        raise UsageError("--images and --batch-id are required (unless --refeaturize-published)")
    if bool(args.images) != bool(args.batch_id):
        raise UsageError("--images and --batch-id go together: the batch's photos and its id")
    if args.batch_id:
        check_batch_id(args.batch_id)
    if not 32 <= args.image_size <= 1024:
        raise UsageError(f"--image-size {args.image_size}: expected 32..1024")
    if args.precision != "fp32" and args.engine != "onnxruntime":
        raise UsageError(f"--precision {args.precision}: runs with --engine onnxruntime only")
    if not 1 <= args.batch_size <= 4096:
        raise UsageError(f"--batch-size {args.batch_size}: expected 1..4096")
    return args


def _task_cpus() -> int:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    try:
        return max(1, int(ctx.cpus())) if ctx is not None else 1
    except Exception:
        return 1


class WorkerTally(NamedTuple):
    """Spark accumulators of what the Python workers did (summed over workers): seconds decoding, in
    the model and folding the moments, and the fold's scatter updates; with the driver's laps, the
    job's time split (make bench)."""

    decode: "Accumulator"
    model: "Accumulator"
    fold: "Accumulator"
    fold_blocks: "Accumulator"

    @classmethod
    def of(cls, spark) -> "WorkerTally":
        sc = spark.sparkContext
        return cls(sc.accumulator(0.0), sc.accumulator(0.0), sc.accumulator(0.0), sc.accumulator(0))


def make_featurize_fn(
    model_bc, image_size: int, batch_size: int, max_pixels: int, progress_folder: str, tally: WorkerTally
):
    """mapInPandas function over (path, label, split, sha256, content): each photo's outcome (its
    features, or its reject), then one row more per task holding the moments of the task's vectors
    (`moments` set, no path). Folded here, where the vectors are born, in blocks of
    moments.MODEL_PASS_ROWS: no second pass over them, and the task's moments are committed with its
    outcomes by Spark's output commit, so a retried task counts once."""
    key = ("mobilenet_v2", uuid.uuid4().hex, image_size)  # new job, new model in a reused worker
    no_class = contract.reject_reason("no_class_folder")

    def featurize_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        infer, counter = None, progress.WorkerCounter(progress_folder)
        builder = moments.MomentsBuilder(FEATURE_DIM, moments.MODEL_PASS_ROWS)
        for pdf in batches:
            started = time.perf_counter()
            labelled = pdf["label"].notna().to_numpy()
            # A photo outside a class folder is rejected undecoded: it has no label to learn from.
            images, errors = decode_many(pdf["content"].to_numpy()[labelled], image_size, max_pixels)
            if len(images) and infer is None:  # a batch of only bad files never loads the model
                infer = worker_infer_fn(key, lambda: model_bc.value, _task_cpus())
            decoded = time.perf_counter()
            vectors = iter(featurize(infer, images, batch_size) if len(images) else ())
            modelled = time.perf_counter()
            outcomes = iter(errors)
            features, reasons, details = [], [], []
            kept: list[int] = []  # the rows featurized, and their vectors: what the fold adds
            kept_vectors: list[np.ndarray] = []
            for row, has_label in enumerate(labelled):
                err = next(outcomes) if has_label else (no_class, contract.REJECT_REASONS[no_class])
                vec = None if err else next(vectors)
                if vec is not None and not np.isfinite(vec).all():
                    err, vec = (contract.reject_reason("non_finite_features"), "model output has NaN/Inf"), None
                if vec is not None:
                    kept.append(row)
                    kept_vectors.append(vec)
                features.append(vec)
                reasons.append(err[0] if err else None)
                details.append(err[1] if err else None)
            if kept:
                columns = [pdf[name].to_numpy() for name in ("split", "label", "path")]
                splits, labels, paths = ([column[i] for i in kept] for column in columns)
                builder.add(np.stack(kept_vectors), splits, labels, paths)
            tally.decode.add(decoded - started)
            tally.model.add(modelled - decoded)
            tally.fold.add(time.perf_counter() - modelled)
            counter.add(len(pdf))
            yield pdf.drop(columns="content").assign(features=features, reason=reasons, detail=details, moments=None)
        started = time.perf_counter()
        builder.flush()
        tally.fold.add(time.perf_counter() - started)
        tally.fold_blocks.add(builder.updates)
        if builder.updates:  # a task of rejects only sends no moments (26 MB of zeros)
            yield pd.DataFrame([dict.fromkeys(OUTCOME_COLUMNS) | {"moments": builder.result().to_bytes()}])

    return featurize_partition


def path_columns(root_uri: str):
    """label and split from the path, as contract.label_and_split says (tested against it)."""
    from pyspark.sql import functions as F

    prefix = root_uri.rstrip("/") + "/"
    rel = F.when(F.col("path").startswith(prefix), F.expr(f"substring(path, {len(prefix) + 1})"))
    parts = F.split(rel, "/")
    depth = F.size(parts)
    label = F.when((depth >= 2) & ~F.element_at(parts, -2).isin(*contract.SPLITS), F.element_at(parts, -2))
    split = F.when(
        label.isNotNull() & (depth >= 3) & F.element_at(parts, -3).isin(*contract.SPLITS), F.element_at(parts, -3)
    )
    return label.alias("label"), split.cast("string").alias("split")


def task_count(files: int, cores: int) -> int:
    """Spark tasks for the model pass: ~IMAGES_PER_TASK images each, at least one per core."""
    return max(cores, math.ceil(files / IMAGES_PER_TASK))


def manifest_paths(spark, manifest_uri: str, root_uri: str) -> list[str]:
    """The batch's files as binaryFile's `path` values: <root>/<path relative to the landing folder>."""
    manifest = json.loads(hadoop_fs.read_text(spark, manifest_uri))
    return [f"{root_uri.rstrip('/')}/{entry['path']}" for entry in manifest["files"]]


def stage_outcomes(
    spark, args, root_uri: str, staging_uri: str, model_bc, progress_uri: str, tally: WorkerTally
) -> dict:
    """The one pass that reads the images and runs the model; writes every file's outcome, and its
    progress to progress_uri while it runs. Returns what was found under the root but is not the
    batch's (not in its manifest)."""
    from pyspark.sql import functions as F

    manifest = json.loads(hadoop_fs.read_text(spark, args.manifest)) if args.manifest else None
    if manifest is not None and manifest.get("layout") == contract.PACKED:
        return stage_packed_outcomes(spark, args, manifest, root_uri, staging_uri, model_bc, progress_uri, tally)
    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(root_uri)
    listed = listed_files(files)
    skipped = hadoop_fs.list_skipped_by_spark(spark, root_uri)
    expected = None
    if args.manifest:
        # Exactly the files the manifest lists: an object under the prefix that it does not list
        # belongs to no batch (a leftover), and one it lists but storage lacks is a reject.
        expected = manifest_paths(spark, args.manifest, root_uri)
        wanted = set(expected)
        outside = sorted(p for p in listed + skipped if p not in wanted)
        found = set(listed) | set(skipped)
        listed = [p for p in listed if p in wanted]
        skipped = [p for p in skipped if p in wanted]
        files = files.join(
            F.broadcast(spark.createDataFrame([(p,) for p in expected], "path string")), "path", "left_semi"
        )
    reporter = progress.Reporter(
        spark, len(listed), publish=lambda text: hadoop_fs.write_text(spark, progress_uri, text)
    )
    featurize_fn = make_featurize_fn(
        model_bc, args.image_size, args.batch_size, args.max_pixels, reporter.folder, tally
    )
    # coalesce merges the file splits into fewer tasks without moving any bytes (no shuffle).
    files = files.coalesce(task_count(len(listed), spark.sparkContext.defaultParallelism))
    label, split = path_columns(root_uri)
    # The bytes, path, label, split and hash go to Python (the fold needs the path's columns); the
    # hash is computed in the JVM. The length filter is pushed into the reader, so oversized files
    # are never loaded.
    decoded = decoded_outcomes(files.where(F.col("length") <= args.max_file_bytes), label, split, featurize_fn)

    def rejected(df, code: str, detail):
        return rejected_outcomes(df, label, split, code, detail)

    too_large = rejected(
        files.where(F.col("length") > args.max_file_bytes),
        "file_too_large",
        F.concat(F.col("length").cast("string"), F.lit(f" bytes > {args.max_file_bytes}")),
    )
    hidden = rejected(
        spark.createDataFrame([(p,) for p in skipped], "path string"), "hidden_file", F.lit(contract.HIDDEN_REASON)
    )
    # The cheap branches first: their tasks then run while the Python workers start, not after.
    spark.sparkContext.setJobGroup(progress.JOB_GROUP, "model pass")
    with reporter:
        (
            hidden.unionByName(too_large)
            .unionByName(decoded)
            .withColumn("batch_id", F.lit(args.batch_id))
            .write.mode("overwrite")
            .parquet(staging_uri)
        )
    spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    # Spark's scan drops the 0-byte files its index listed: they are the listed files with no
    # outcome yet. Found from the staged paths, not by another scan of the images (on S3 every
    # scanned file costs a request, even unread).
    empty = rejected(
        spark.createDataFrame([(p,) for p in listed], "path string").join(
            spark.read.parquet(staging_uri).select("path"), "path", "left_anti"
        ),
        "empty_file",
        F.lit("0 bytes"),
    )
    empty.withColumn("batch_id", F.lit(args.batch_id)).write.mode("append").parquet(staging_uri)
    if expected is not None:
        missing = [p for p in expected if p not in found]
        if missing:
            (
                rejected(
                    spark.createDataFrame([(p,) for p in missing], "path string"),
                    "not_found",
                    F.lit("listed in the batch manifest, not in storage"),
                )
                .withColumn("batch_id", F.lit(args.batch_id))
                .write.mode("append")
                .parquet(staging_uri)
            )
        return {"not_in_manifest": len(outside), "not_in_manifest_examples": outside[:5]}
    return {}


def decoded_outcomes(files, label, split, featurize_fn):
    """Each photo of files (path, content) through the model (make_featurize_fn): its features or its
    reject, and the tasks' moments rows."""
    from pyspark.sql import functions as F

    return files.select("path", label, split, F.sha2("content", 256).alias("sha256"), "content").mapInPandas(
        featurize_fn, OUTCOME_SCHEMA
    )


def rejected_outcomes(df, label, split, code: str, detail):
    """Files rejected before decoding, in the same columns as decoded_outcomes."""
    from pyspark.sql import functions as F

    return df.select(
        "path",
        label,
        split,
        F.lit(None).cast("string").alias("sha256"),
        F.lit(None).cast("array<float>").alias("features"),
        F.lit(contract.reject_reason(code)).alias("reason"),
        detail.alias("detail"),
        F.lit(None).cast("binary").alias("moments"),
    )


def packed_entries(manifest: dict, root_uri: str) -> tuple[list[tuple[str, str]], list[tuple[str, int]]]:
    """A packed batch's photos as `path` values (their logical keys under root_uri): (path, shard
    file name) of those in a shard, and (path, size) of those over ingest's size limit (in none)."""
    root = root_uri.rstrip("/") + "/"
    packed, unpacked = [], []
    for entry in manifest["files"]:
        if entry["shard"]:
            packed.append((root + entry["path"], entry["shard"].rpartition("/")[2]))
        else:
            unpacked.append((root + entry["path"], entry["size"]))
    return packed, unpacked


def split_bytes(total_bytes: int, photos: int, cores: int) -> int:
    """spark.sql.files.maxPartitionBytes for reading shards: ~IMAGES_PER_TASK photos per task (Spark
    gives each task the row groups whose middle falls in its split; ingest sizes row groups so)."""
    return max(1 << 20, math.ceil(total_bytes / task_count(photos, cores)))


def packed_photos(spark, shard_uris: list[str], root_uri: str, wanted: list[tuple[str, str]]):
    """(path, length, content) of the photos the manifest places in these shards: one Parquet scan,
    no request per photo. A row whose photo the manifest places in another shard (the copy a later
    ingest of the batch replaced) is left out, so no photo is read twice."""
    from pyspark.sql import functions as F

    schema = "path string, length bigint, content binary"
    if not shard_uris:
        return spark.createDataFrame([], schema)
    rows = spark.read.parquet(*shard_uris).select(
        F.concat(F.lit(root_uri.rstrip("/") + "/"), F.col("path")).alias("path"),
        F.col("size").alias("length"),
        F.col("bytes").alias("content"),
        F.element_at(F.split(F.input_file_name(), "/"), -1).alias("shard"),
    )
    where = spark.createDataFrame(wanted, "path string, shard string")
    return rows.join(F.broadcast(where), ["path", "shard"], "left_semi").select("path", "length", "content")


def stage_packed_outcomes(
    spark, args, manifest: dict, root_uri: str, staging_uri: str, model_bc, progress_uri, tally: WorkerTally
) -> dict:
    """stage_outcomes for a batch packed in Parquet shards (the manifest's "layout"): every photo it
    lists ends featurized or rejected, as a loose batch's would, under the same `path`."""
    from pyspark.sql import functions as F

    packed, unpacked = packed_entries(manifest, root_uri)
    root = root_uri.rstrip("/") + "/"
    names = sorted({shard for _, shard in packed})
    stored = [name for name in names if hadoop_fs.exists(spark, root + name)]
    cores = spark.sparkContext.defaultParallelism
    sizes = {s["key"].rpartition("/")[2]: s["size"] for s in manifest.get("shards", [])}
    task_bytes = str(split_bytes(sum(sizes.get(n, 0) for n in stored), len(packed), cores))
    photos = packed_photos(spark, [root + name for name in stored], root_uri, packed)
    reporter = progress.Reporter(
        spark, len(packed), publish=lambda text: hadoop_fs.write_text(spark, progress_uri, text)
    )
    featurize_fn = make_featurize_fn(
        model_bc, args.image_size, args.batch_size, args.max_pixels, reporter.folder, tally
    )
    label, split = path_columns(root_uri)
    length = F.col("length")
    limit = manifest.get("max_file_bytes", contract.DEFAULT_MAX_FILE_BYTES)
    outcomes = [
        rejected_outcomes(
            spark.createDataFrame(unpacked, "path string, length bigint"),
            label,
            split,
            "file_too_large",
            F.concat(length.cast("string"), F.lit(f" bytes > {limit} (ingest's limit: not stored)")),
        ),
        rejected_outcomes(photos.where(length == 0), label, split, "empty_file", F.lit("0 bytes")),
        rejected_outcomes(
            photos.where(length > args.max_file_bytes),
            label,
            split,
            "file_too_large",
            F.concat(length.cast("string"), F.lit(f" bytes > {args.max_file_bytes}")),
        ),
        decoded_outcomes(photos.where((length > 0) & (length <= args.max_file_bytes)), label, split, featurize_fn),
    ]
    staged = outcomes[0]
    for more in outcomes[1:]:  # the cheap branches first, as in stage_outcomes
        staged = staged.unionByName(more)
    spark.sparkContext.setJobGroup(progress.JOB_GROUP, "model pass")
    # For the model pass only (the scan is planned when it runs); the job's other reads keep theirs.
    with reporter, session_conf(spark, {"spark.sql.files.maxPartitionBytes": task_bytes}):
        staged.withColumn("batch_id", F.lit(args.batch_id)).write.mode("overwrite").parquet(staging_uri)
    spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    # Listed, but in a shard that is gone or without its row: rejected, so read == the manifest's count.
    missing = spark.createDataFrame([(p,) for p, _ in packed], "path string").join(
        spark.read.parquet(staging_uri).select("path"), "path", "left_anti"
    )
    (
        rejected_outcomes(missing, label, split, "not_found", F.lit("listed in the batch manifest, not in its shard"))
        .withColumn("batch_id", F.lit(args.batch_id))
        .write.mode("append")
        .parquet(staging_uri)
    )
    strays = [n for n in hadoop_fs.list_names(spark, root_uri) if n not in set(names)]
    return {"not_in_manifest": len(strays), "not_in_manifest_examples": [root + n for n in strays[:5]]}


def uri_to_spark_path(uri: str) -> str:
    """file:///a%20b -> file:/a b: the file index's URIs in the form of binaryFile's `path`."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    path = unquote(parts.path)  # not unquote_plus: a '+' in a file name stays a '+'
    return f"file:{path}" if parts.scheme == "file" else f"{parts.scheme}://{parts.netloc}{path}"


def listed_files(files_df) -> list[str]:
    """Every file Spark's index listed (its scan later drops the empty ones), as `path` values."""
    # inputFiles() crosses py4j once per file: ~1 s per 10k files, fine for a daily batch.
    return [uri_to_spark_path(u) for u in files_df.inputFiles()]


def write_run(df, uri: str, rows: int, keep_empty: bool = False) -> str | None:
    """One output of this run, in its own folder; None when there is nothing to write (unless
    keep_empty: then one Parquet file without rows)."""
    if rows == 0 and not keep_empty:
        return None
    df.coalesce(max(1, math.ceil(rows / ROWS_PER_OUTPUT_FILE))).write.mode("errorifexists").parquet(uri)
    return uri


def _importer(modules):
    """A mapInPandas function that imports modules in the Python worker running it."""

    def import_modules(batches):
        for name in modules:
            importlib.import_module(name)
        yield from batches

    return import_modules


def _count_quietly(df) -> None:
    try:
        df.count()
    except Exception:  # best effort: the model pass starts the workers anyway (or the job failed)
        pass


def start_python_workers(spark, engine: str) -> threading.Thread:
    """Start the Python workers and their imports (~2.5 s on 2 cores) in a tiny job of one task per
    core, while the driver prepares the model; Spark reuses those workers for the model pass. The
    ONNX Runtime engine's import is cheap and done here; TensorFlow's is left to the model pass."""
    cores = spark.sparkContext.defaultParallelism
    modules = ["fruits_jobs.images", *(["onnxruntime"] if engine == "onnxruntime" else [])]
    job = spark.range(0, cores, numPartitions=cores).mapInPandas(_importer(modules), "id long")
    thread = threading.Thread(target=_count_quietly, args=(job,), name="start-python-workers", daemon=True)
    thread.start()
    return thread


def driver_model(spark, args) -> tuple[mobilenet.EngineModel, dict]:
    """The model the workers will run, from --weights, --engine and --precision, and its extractor
    (extractors.py). A weights file is fetched once, for its digest and for loading."""

    def fetch(uri, local):
        hadoop_fs.copy_to_local(spark, uri, local)

    source, sha256 = args.weights, None
    if source not in contract.NAMED_WEIGHTS:
        source = mobilenet.local_copy(source, fetch)
        sha256 = file_digests(source, "sha256")[0]
    given_onnx = contract.weights_suffix(args.weights) == contract.ONNX_SUFFIX
    if given_onnx and args.engine != "onnxruntime":
        raise UsageError(f"--weights {args.weights} is an ONNX model: it runs with --engine onnxruntime only")
    export = mobilenet.export_name(args.engine, given_onnx)
    weights = extractors.weights_name(args.weights, args.image_size, sha256)
    model = fp32_model(spark, args, source, weights, given_onnx)
    if args.precision == "int8":
        model, export = int8_model(spark, args, model, weights, export)
    made_by = extractors.extractor(
        weights,
        args.image_size,
        args.engine,
        args.precision,
        export,
    )
    print(f"model: extractor {extractors.describe(made_by)}", file=sys.stderr)
    return model, made_by


# One ONNX export per weights (extractors.weights_name: a file's sha256, or a named source: random is
# seeded) and image size per process: a driver that runs several jobs (the tests, a notebook) exports
# once; spark-submit runs one (--model-cache keeps it for the next).
_EXPORTS: dict[tuple[str, int], mobilenet.EngineModel] = {}


def fp32_model(spark, args, source: str, weights: str, given_onnx: bool) -> mobilenet.EngineModel:
    """An .onnx file as it is; the weights' ONNX export from --model-cache when one was made with the
    same weights (weights: their extractor name), size and exporter (no TensorFlow on this side then);
    else loaded in Keras and exported (ONNX: checked against Keras on a probe batch, then kept in
    --model-cache) or frozen (tensorflow)."""
    if given_onnx:
        with open(source, "rb") as f:
            return mobilenet.onnx_model(f.read(), args.image_size, args.weights)
    if args.engine == "tensorflow":
        return mobilenet.freeze_model(mobilenet.load_model(source, args.image_size))
    cached = None
    if args.model_cache:
        cached = f"{args.model_cache.rstrip('/')}/{mobilenet.onnx_cache_name(weights, args.image_size)}"
        if hadoop_fs.exists(spark, cached):
            print(f"model: the ONNX export of {args.weights} from {cached}", file=sys.stderr)
            return mobilenet.onnx_model(hadoop_fs.read_bytes(spark, cached), args.image_size, cached)
    key = (weights, args.image_size)
    exported = _EXPORTS.get(key)
    if exported is not None:
        print(f"model: the ONNX export of {args.weights} made earlier by this process", file=sys.stderr)
    else:
        keras_model = mobilenet.load_model(source, args.image_size)
        exported = _EXPORTS[key] = mobilenet.export_onnx(keras_model)
        cosine = mobilenet.check_export(keras_model, exported)
        print(f"model: exported to ONNX, cosine to Keras on the probe batch {cosine:.7f}", file=sys.stderr)
    if cached:
        hadoop_fs.write_bytes_atomically(spark, cached, exported.graph)
    return exported


def int8_model(
    spark, args, fp32: mobilenet.EngineModel, weights: str, fp32_export: str
) -> tuple[mobilenet.EngineModel, str]:
    """--precision int8: the FP32 graph quantized, calibrated on --calibration's Training photos and
    checked against FP32 on them; made once per weights, image size and calibration set, kept in
    --model-cache beside the FP32 export. Returns it and its export name."""
    if not args.calibration:
        raise UsageError(
            "--precision int8 needs --calibration: a folder of a few hundred Training photos of your classes"
        )
    root = hadoop_fs.qualify(spark, args.calibration)
    uris, calibration = mobilenet.calibration_sample(hadoop_fs.list_files(spark, root), root)
    if not uris:
        raise UsageError(f"--calibration {args.calibration}: no photo there; copy a few hundred Training photos in")
    export = mobilenet.int8_export_name(fp32_export, calibration)
    cached = None
    if args.model_cache:
        name = mobilenet.int8_cache_name(weights, args.image_size, calibration)
        cached = f"{args.model_cache.rstrip('/')}/{name}"
        if hadoop_fs.exists(spark, cached):
            print(f"model: the INT8 graph from {cached}", file=sys.stderr)
            return fp32._replace(graph=hadoop_fs.read_bytes(spark, cached)), export
    # One photo at a time, decoded at once: a few hundred model-sized images on the driver, never the files.
    decoded = [decode_many([hadoop_fs.read_bytes(spark, uri)], args.image_size, args.max_pixels) for uri in uris]
    images = np.concatenate([found for found, _ in decoded])
    if not len(images):
        raise UsageError(f"--calibration {args.calibration}: none of its {len(uris)} files decodes as a photo")
    int8 = mobilenet.quantize_int8(fp32, images)
    mean, worst = mobilenet.check_int8(fp32, int8, images)
    print(
        f"model: quantized to INT8 on {len(images)} calibration photos; cosine to FP32 on them: mean {mean:.4f}, "
        f"smallest {worst:.4f}",
        file=sys.stderr,
    )
    if cached:
        hadoop_fs.write_bytes_atomically(spark, cached, int8.graph)
    return int8, export


class Stopwatch:
    """Wall-clock laps of the driver's steps (seconds, by name) and their total."""

    def __init__(self):
        self.started = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[f"{name}_s"] = round(now - self.last, 3)
        self.last = now

    @property
    def total(self) -> float:
        return self.last - self.started


def run(spark, args) -> dict:
    features_uri = hadoop_fs.qualify(spark, args.features).rstrip("/")
    rejects_uri = hadoop_fs.qualify(spark, args.rejects).rstrip("/")
    batches = batches_to_featurize(spark, args, features_uri)
    run_id = commits.new_run_id()
    token, generation = lease_token(spark, args.lease)

    warming = start_python_workers(spark, args.engine)
    engine_model, made_by = driver_model(spark, args)
    model_bc = spark.sparkContext.broadcast(engine_model)
    results = [featurize_batch(spark, batch, run_id, model_bc, made_by, features_uri, rejects_uri) for batch in batches]
    warming.join()
    stagings = [summary.pop("staging") for summary in results]
    for batch, summary in zip(batches, results, strict=True):
        own = batch.batch_id == args.batch_id  # the day's batch: the run's lease is its own
        summary.update(token=token if own else None, lease_generation=generation if own else None)
        # Each run's record first (the tables' commits then name it, through the run= folder of its files).
        summary["record"] = commits.write_record(spark, features_uri, batch.batch_id, run_id, summary)
    versions = publish_tables(spark, args, {layout.REJECTS: rejects_uri, layout.FEATURES: features_uri}, results)
    for summary, staging in zip(results, stagings, strict=True):
        summary["table_versions"] = versions
        hadoop_fs.delete(spark, staging)
    clean_up(spark, args, features_uri, rejects_uri, run_id, [batch.batch_id for batch in batches])
    summary = results[0] if args.batch_id else {"job": "extract_features", "run": run_id, "extractor": made_by}
    if args.refeaturize_published:
        summary["refeaturized"] = refeaturized(results)
    return summary


def batches_to_featurize(spark, args, features_uri: str) -> list[argparse.Namespace]:
    """The run's batches, each as the job's arguments for it: the day's (--batch-id), then with
    --refeaturize-published every other batch the features table publishes, from its stored photos
    and its manifest in that lake."""
    batches = [args] if args.batch_id else []
    if args.refeaturize_published:
        lake = hadoop_fs.qualify(spark, args.refeaturize_published).rstrip("/") + "/"
        for batch in sorted(set(tables.current_runs(features_uri)) - {args.batch_id}):
            stored = {"images": lake + layout.raw_prefix(batch), "manifest": lake + layout.manifest_key(batch)}
            batches.append(argparse.Namespace(**{**vars(args), "batch_id": batch, "lease": None, **stored}))
    if not batches:
        raise UsageError(f"--refeaturize-published: {args.features} publishes no batch, and no --batch-id was given")
    return batches


def refeaturized(results: list[dict]) -> dict:
    """What featurizing every published batch again cost (the run report's figures)."""
    return {
        "batches": [summary["batch_id"] for summary in results],
        "read": sum(summary["read"] for summary in results),
        "featurized": sum(summary["featurized"] for summary in results),
        "seconds": round(sum(summary["seconds"] for summary in results), 2),
    }


def featurize_batch(spark, args, run_id: str, model_bc, made_by: dict, features_uri: str, rejects_uri: str) -> dict:
    """One batch through the model into this run's folders in the tables' folders, its moments and
    its summary (the record to be); nothing is published here."""
    from pyspark.sql import functions as F

    root_uri = hadoop_fs.qualify(spark, args.images)
    if not hadoop_fs.exists(spark, root_uri):
        raise UsageError(f"--images {args.images}: no such folder")
    batch_runs = layout.batch_runs_of(features_uri)
    # Named by the run, so a later run can tell when it is older than the tables' retention.
    staging_uri = f"{batch_runs}/{layout.STAGING_DIR}/{run_id}.{args.batch_id}"
    clock, tally = Stopwatch(), WorkerTally.of(spark)  # the data work, not loading the model
    ignored = stage_outcomes(
        spark,
        args,
        root_uri,
        staging_uri,
        model_bc,
        f"{batch_runs}/{layout.progress_name(args.batch_id)}",
        tally,
    )
    clock.lap("model_pass")
    staged = spark.read.parquet(staging_uri)
    photos = staged.where(F.col("moments").isNull())
    by_reason = outcome_counts(photos)
    featurized = by_reason.pop(None, 0)
    rejected = sum(by_reason.values())
    clock.lap("count")
    moments_uri = layout.moments_path(batch_runs, args.batch_id, run_id) if featurized else None
    with ThreadPoolExecutor(1) as pool:
        # The tasks' moments are merged and saved while the tables' files are written: the fixed
        # costs of its Spark job (planning, a Python task) and of the file overlap theirs.
        gathering = pool.submit(save_moments, spark, staged, moments_uri, made_by)
        # This run's folders, inside the tables' folders: nobody reads them until the tables' logs name them.
        outputs = {
            # Written even with no row: a published batch always has files in the features table, whose
            # run= folder names the batch's current run (tables.current_runs).
            "features": write_run(
                photos.where(F.col("reason").isNull()).select("path", "label", "split", "sha256", "features"),
                layout.run_folder(layout.batch_folder(features_uri, args.batch_id), run_id),
                featurized,
                keep_empty=True,
            ),
            "rejects": write_run(
                photos.where(F.col("reason").isNotNull()).select("path", "reason", "detail", "label", "split"),
                layout.run_folder(layout.batch_folder(rejects_uri, args.batch_id), run_id),
                rejected,
            ),
        }
        clock.lap("write")
        folded = gathering.result()
    clock.lap("moments")  # what the fold adds after the writes
    if folded != featurized:  # Spark commits a task's rows and moments together
        raise RuntimeError(f"batch {args.batch_id}: moments of {folded} vectors for {featurized} featurized")
    if moments_uri:
        outputs["moments"] = moments_uri
    summary = batch_summary(args, run_id, outputs, featurized, by_reason, ignored, clock.total, None)
    summary["timings"] = clock.laps | {
        "decode_worker_s": round(tally.decode.value, 2),
        "model_worker_s": round(tally.model.value, 2),
        "fold_worker_s": round(tally.fold.value, 2),
        "fold_blocks": tally.fold_blocks.value,
        "cores": spark.sparkContext.defaultParallelism,
    }
    summary["extractor"] = made_by  # how these features were made: a space takes only its own (pca.py)
    summary["staging"] = staging_uri  # deleted once published (not part of the record)
    return summary


def save_moments(spark, staged, uri: str | None, made_by: dict) -> int:
    """Merge the staged moments rows into the batch's moments file at uri (none: no vector to fold);
    returns the vectors folded."""
    if uri is None:
        return 0
    batch_moments = moments.gather(staged, FEATURE_DIM)
    hadoop_fs.write_bytes_atomically(spark, uri, batch_moments.to_bytes(made_by))
    return batch_moments.moments.n


def outcome_counts(photos) -> dict[str | None, int]:
    """{reason: photos} of the staged outcomes, the featurized under None: a scan of one column."""
    return {row["reason"]: row["count"] for row in photos.groupBy("reason").count().collect()}


def clean_up(spark, args, features_uri: str, rejects_uri: str, run_id: str, batches: list[str]) -> None:
    """What no version within the tables' retention needs: the tables' replaced and never-committed
    files (vacuum), and the side files of runs older than the retention (records, moments, staging)."""
    cutoff = commits.retention_cutoff(args.retention_hours)
    current_runs = tables.current_runs(features_uri)
    gone = [path for uri in (rejects_uri, features_uri) for path in tables.vacuum(uri, args.retention_hours)]
    for batch in batches:
        gone += commits.clean_batch_runs(spark, features_uri, batch, current_runs.get(batch, run_id), cutoff)
    gone += commits.clean_older_children(spark, f"{layout.batch_runs_of(features_uri)}/{layout.STAGING_DIR}", cutoff)
    if gone:
        print(f"retention ({args.retention_hours:g} h): {len(gone)} file(s) or folder(s) deleted", file=sys.stderr)


def publish_tables(spark, args, table_uris: dict[str, str], results: list[dict]) -> dict[str, int] | None:
    """The run's files into the Delta tables (tables.py; table_uris by dataset), rejects first, then
    features, the publication point: a consumer sees the batches' new rows once the features table's
    commit lands, all the run's batches in one commit (a change of extractor switches every batch at
    once), and `fruits` counts them published from then on. Fenced: a run given up on (the day's
    batch's lease revoked or re-issued) publishes nothing, which the log itself enforces."""
    own = next((summary for summary in results if summary["batch_id"] == args.batch_id), None)
    lease = commits.read_lease(spark, hadoop_fs.qualify(spark, args.lease)) if args.lease else None
    if own is not None and not commits.is_live(own, lease):  # given up already: no commit to attempt
        print(
            f"WARNING: batch {args.batch_id}: its lease no longer holds this run's token: nothing published",
            file=sys.stderr,
        )
        return None
    first = results[0]
    metadata = {"run": first["run"], "token": first["token"], "read": sum(summary["read"] for summary in results)}
    if first.get("extractor"):
        metadata["extractor"] = first["extractor"]["id"]
    fence = None if own is None or own["lease_generation"] is None else (args.batch_id, own["lease_generation"])
    versions = {}
    for dataset in tables.BATCH_TABLES:  # rejects, then features (the publication point)
        files_by_batch = {}
        for summary in results:
            folder = summary[dataset.rstrip("/")]
            files_by_batch[summary["batch_id"]] = (
                [f"{folder}/{file}" for file in hadoop_fs.data_files(spark, folder)] if folder else []
            )
        try:
            versions[dataset.rstrip("/")] = tables.publish_batches(
                table_uris[dataset], tables.SCHEMAS[dataset], files_by_batch, metadata, fence
            )
        except tables.GivenUp as exc:  # revoked while this run ran: the log refused it
            print(f"WARNING: {exc}", file=sys.stderr)
            return None
    print(f"tables: batch(es) {', '.join(files_by_batch)} published, table versions {versions}", file=sys.stderr)
    return versions


def lease_token(spark, lease_uri: str | None) -> tuple[str | None, int | None]:
    """The token this run publishes under and the lease's generation (read once, together: what the
    tables' log is fenced with); a revoked lease means the run was given up: stop here."""
    lease = commits.read_lease(spark, hadoop_fs.qualify(spark, lease_uri)) if lease_uri else None
    if lease is not None and lease.get("token") is None:
        raise UsageError(
            f"--lease {lease_uri}: revoked ({lease.get('revoked')}); this run was given up, start a new one"
        )
    return (lease["token"], lease.get("generation")) if lease else (None, None)


def batch_summary(
    args, run_id: str, outputs: dict, featurized: int, by_reason: dict, ignored: dict, seconds: float, token: str | None
) -> dict:
    """What the batch's run record holds besides its run id: the inputs, the outputs (features and
    rejects folders), the counts and the rate, and the lease's token. Readers (publish_summary, the
    CLI) rely on these keys."""
    rejected = sum(by_reason.values())
    read = featurized + rejected
    return {
        "job": "extract_features",
        "batch_id": args.batch_id,
        "run": run_id,
        "token": token,
        "images": args.images,
        "features": outputs["features"],
        "rejects": outputs["rejects"],
        "moments": outputs.get("moments"),  # count, mean, scatter, per-class sums: what the PCA merges
        "weights": args.weights,
        "engine": args.engine,
        "image_size": args.image_size,
        "feature_dim": FEATURE_DIM,
        "read": read,
        "featurized": featurized,
        "rejected": rejected,
        "rejects_by_reason": dict(sorted(by_reason.items())),
        **ignored,
        "seconds": round(seconds, 2),
        "images_per_s": round(read / seconds, 2) if seconds else None,
    }


def spark_conf(args) -> dict:
    conf = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # One Arrow batch = one model batch: bounded memory even for 10 MB phone photos.
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(args.batch_size),
        "spark.python.worker.reuse": "true",  # keep each worker's model across tasks
        # The job prints its own progress (images, rate, time left); Spark's bar would garble the log.
        "spark.ui.showConsoleProgress": "false",
    }
    photos = args.images or args.refeaturize_published  # where the photos are: the day's, or the lake's
    if "://" not in photos or photos.startswith("file:"):
        # Listing a local disk takes milliseconds; Spark's default lists folders with >32
        # subfolders in a Spark job per level (~1.5 s each here). Kept for s3://, where it pays.
        conf["spark.sql.sources.parallelPartitionDiscovery.threshold"] = "1000000"
    return conf


def main(argv=None) -> dict:
    args = parse_args(argv)
    spark = spark_session(f"fruits-extract-features-{args.batch_id or 'every-published-batch'}", spark_conf(args))
    try:
        summary = run(spark, args)
    finally:
        spark.stop()
    emit_summary(summary)
    return summary
