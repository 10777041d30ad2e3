"""Step 2: the lake's embedding space, brought up to date in O(the new photos).

One space (a PCA basis, saved as a Spark ML PCAModel) holds the vectors of every published batch,
one folder per batch, in the vectors Delta table: its current version is the current space, and the
newest run among its files' folders names the run whose record (pca/spaces/<space>/runs/<run>/
metrics.json) describes it (commits.read_space). A run:

1. finds the published batches the space lacks (new, or re-published), from the features table's
   log (the run= folder of each batch's current files), reading only their run records;
2. merges their moments (moments.py, kept by the features job) into the space's running totals:
   a fixed-size state, not the lake (a re-published batch: totals rebuilt from per-batch moments);
3. judges drift (spaces.py) and, usually, projects only those batches into the current space;
   on drift, a changed k rule, pca_refit=always or the lake's first run it fits a new space from
   the totals and re-projects every batch (the one step that grows with the lake);
4. publishes: the new vectors, the totals, the metrics (explained variance from the moments,
   per-class quality from running class sums) written first, then one commit of the vectors table
   makes them current together.

Projection is Spark ML's: uncentred (vectors = features x components), an affine map of features.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from fruits_jobs import commits, extractors, hadoop_fs, layout, quality, spaces, tables
from fruits_jobs.common import UsageError, add_retention_argument, emit_summary, spark_session
from fruits_jobs.contract import FEATURE_DIM
from fruits_jobs.moments import BatchMoments, fold
from fruits_jobs.plots import plot_class_quality, plot_explained_variance, plot_scatter

SCATTER_SAMPLE = 20_000  # points drawn in the scatter plot: enough to see structure, cheap to collect


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="reduce_dimensions.py", description=__doc__.split("\n")[0])
    p.add_argument("--features", required=True, help="features dataset root written by extract_features.py")
    p.add_argument(
        "--output",
        required=True,
        help="the lake's pca/ folder: spaces/<space>/ and _commits/<run>.json, whose newest names the current space",
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--k", type=int, help="number of components of a new space")
    group.add_argument("--variance", type=float, help="a new space's k: the smallest reaching this explained variance")
    p.add_argument(
        "--refit",
        choices=spaces.REFIT_CHOICES,
        default="auto",
        help="auto: a new space on drift (default); always: a new space now; never: keep the current space",
    )
    p.add_argument(
        "--change-extractor",
        action="store_true",
        help="take batches featurized with another extractor than the current space's: a new space, once "
        "every published batch has features from that extractor (else exit 2); without it such a batch "
        "is refused (exit 2) and the space stays as it was",
    )
    add_retention_argument(p)
    args = p.parse_args(argv)
    if args.k is not None and args.k < 1:
        raise UsageError(f"--k {args.k}: expected a positive integer")
    if args.variance is not None and not 0.0 < args.variance <= 1.0:
        raise UsageError(f"--variance {args.variance}: expected a number in (0, 1]")
    return args


# ---- What the lake holds -----------------------------------------------------------------------


def published_changes(
    spark, features_uri: str, published: dict[str, list[str]], in_space: dict[str, str]
) -> tuple[dict[str, dict], list[str]]:
    """The records (with their current files) of the published batches (published: the features
    table's tables.current_files) whose current run the space does not hold (new or re-published),
    and the space's batches that are no longer published. Records are read only for those that changed."""
    changed = {
        batch: commit_of(spark, features_uri, batch, published)
        for batch, uris in sorted(published.items())
        if in_space.get(batch) != tables.run_of_files(features_uri, batch, uris)
    }
    return changed, [batch for batch in in_space if batch not in published]


def space_extractor(
    space: dict | None, changed: dict[str, dict], kept: dict[str, str], change_asked: bool
) -> tuple[dict | None, str | None]:
    """The extractor (extractors.py) of the space this run publishes, and the refit reason when it is
    a new extractor's space; UsageError (exit 2, the space untouched) for a batch that may not join:
    changed batches made differently from each other, or from the current space unless
    --change-extractor, and then only once every published batch has the new extractor's features."""
    # A batch featurized before extractors were recorded names none: it is taken as it was before.
    made = {batch: record["extractor"] for batch, record in sorted(changed.items()) if record.get("extractor")}
    ids = {batch: found["id"] for batch, found in made.items()}
    if len(set(ids.values())) > 1:
        first = next(iter(made))
        other = next(b for b in made if ids[b] != ids[first])
        raise UsageError(
            f"batches {first} and {other} were featurized differently ({extractors.describe(made[first])} vs "
            f"{extractors.describe(made[other])}): one space holds one extractor's features; re-run one of "
            "them with the other's settings (rerun=true)"
        )
    current = space.get("extractor") if space else None
    if not made:
        return current, None
    new = next(iter(made.values()))
    if space is None or new["id"] == (current or {}).get("id"):
        return new, None
    if current is None:  # a space fitted before extractors were recorded: it takes its next batches'
        print(
            f"WARNING: space {space['space']} has no extractor on record (fitted before they were): it takes "
            f"{extractors.describe(new)}, that of the batches this run adds",
            file=sys.stderr,
        )
        return new, None
    batch = next(iter(made))
    change = "; ".join(extractors.differences(current, new))
    if not change_asked:
        raise UsageError(
            f"batch {batch} was featurized with extractor {extractors.describe(new)}, the current space "
            f"{space['space']} with {extractors.describe(current)} ({change}): it does not join the space, "
            "which stays as it was. Re-run the batch with the space's settings (rerun=true), or change the "
            "extractor on purpose: change_extractor=true re-featurizes every published batch, then fits a "
            "new space (docs/spark-jobs.md, 'Changing the extractor')"
        )
    if kept:
        lagging = sorted(kept)
        raise UsageError(
            f"--change-extractor: {len(lagging)} published batch(es) still have features of the space's "
            f"extractor {extractors.describe(current)} (e.g. {', '.join(lagging[:3])}): a new extractor's "
            "space starts once every published batch is re-featurized with it (change_extractor=true does that)"
        )
    return new, f"extractor changed ({change})"


def batch_moments(spark, commit: dict) -> BatchMoments:
    """A batch's moments: kept by its features job, or (a batch featurized before they were)
    computed here from its features, once per run that needs them."""
    from pyspark.sql import functions as F

    if commit.get("moments"):
        return BatchMoments.from_bytes(hadoop_fs.read_bytes(spark, commit["moments"]))
    if not commit.get("featurized"):
        return BatchMoments.empty(FEATURE_DIM)
    features = spark.read.parquet(*commit["files"])
    first = features.select(F.size("features").alias("d")).first()
    dim = first["d"] if first else FEATURE_DIM
    folded = fold(features, dim)
    if folded.bad_path:
        raise UsageError(
            f"--features: {folded.bad_path} does not hold {dim} finite numbers; re-run its batch (rerun=true)"
        )
    return folded.moments


def read_state(spark, space: dict) -> BatchMoments:
    return BatchMoments.from_bytes(hadoop_fs.read_bytes(spark, space["state"]))


# ---- Writing vectors -----------------------------------------------------------------------------


def pca_model(spark, basis: spaces.Basis, input_col: str = "vec", output_col: str = "pca_vec"):
    """A fitted Spark ML PCAModel from our own basis, so Spark projects and saves it."""
    from pyspark.ml.common import _py2java
    from pyspark.ml.feature import PCA, PCAModel
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    sc = spark.sparkContext
    d, k = basis.components.shape
    # Spark ML has no public constructor for a fitted model, PCA.fit would re-read every vector (it
    # ran out of the 1 GB driver heap at 250k rows), and writing the model's files by hand would copy
    # Spark's private format: so its JVM class is built directly, the matrices pickled across.
    jmodel = sc._jvm.org.apache.spark.ml.feature.PCAModel(
        PCA().uid,
        _py2java(sc, DenseMatrix(d, k, np.asarray(basis.components, dtype=np.float64).ravel(order="F"))),
        _py2java(sc, DenseVector(np.asarray(basis.spectrum[:k], dtype=np.float64))),
    )
    model = PCAModel(jmodel)
    model._set(k=k, inputCol=input_col, outputCol=output_col)
    model._transfer_params_to_java()
    return model


def basis_bytes(basis: spaces.Basis) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, components=basis.components, spectrum=basis.spectrum, mean=basis.mean)
    return buffer.getvalue()


def read_basis(spark, uri: str) -> spaces.Basis:
    import io

    with np.load(io.BytesIO(hadoop_fs.read_bytes(spark, uri))) as z:
        return spaces.Basis(np.array(z["components"]), np.array(z["spectrum"]), np.array(z["mean"]))


VECTORS_COLUMNS = "path string, label string, split string, batch_id string, pca array<float>"


def project_batch(spark, model, batch: str, commit: dict, out_uri: str, scoring: "Scoring | None") -> dict:
    """Write one batch's vectors (path, label, split, batch_id, pca) into out_uri, and the (class,
    predicted) counts of its evaluated photos beside them; returns those counts."""
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.sql import functions as F

    features = spark.read.parquet(*commit["files"]).select(
        "path", "label", "split", F.lit(batch).alias("batch_id"), array_to_vector(F.col("features")).alias("vec")
    )
    rows = commit.get("featurized") or features.count()
    files = max(1, -(-rows // 500_000))  # k floats a row: one file per half a million rows
    model.transform(features).select(
        "path", "label", "split", "batch_id", vector_to_array(F.col("pca_vec"), "float32").alias("pca")
    ).coalesce(files).write.mode("errorifexists").parquet(out_uri)
    counts: dict = {}
    if scoring is not None:
        evaluated = spark.read.parquet(out_uri).where(F.col("label").isin(list(scoring.centroids)))
        if scoring.split is not None:
            evaluated = evaluated.where(F.col("split") == scoring.split)
        counts = quality.confusion(evaluated, scoring.centroids)
    hadoop_fs.write_text(spark, layout.confusion_path(out_uri), json.dumps(quality.counts_to_json(counts)))
    return counts


class Scoring:
    """Class centroids in the space (from running per-class sums: the projection is linear) and
    which photos they score: Test photos when the space has a Training/Test split, else all."""

    def __init__(self, totals: BatchMoments, basis: spaces.Basis):
        split_rule = {quality.TRAIN, quality.TEST} <= totals.splits()
        means = totals.class_means(quality.TRAIN if split_rule else None)
        self.centroids = {label: mean @ basis.components for label, mean in means.items()}
        self.split = quality.TEST if split_rule else None
        self.fitted_on = "Training photos" if split_rule else "all labelled photos"
        self.evaluated_on = (
            "Test photos, each batch's scored against the centroids as they stood when it was projected"
            if split_rule
            else "the same photos (no Training/Test split: optimistic)"
        )


def add_counts(a: dict, b: dict) -> dict:
    return {key: a.get(key, 0) + b.get(key, 0) for key in set(a) | set(b)}


# ---- The run ---------------------------------------------------------------------------------------


def run(spark, args) -> dict:
    from pyspark.ml.feature import PCAModel

    started = time.perf_counter()
    features_uri = hadoop_fs.qualify(spark, args.features).rstrip("/")
    pca_uri = hadoop_fs.qualify(spark, args.output).rstrip("/")
    if not hadoop_fs.exists(spark, features_uri):
        raise UsageError(f"--features {args.features}: no such dataset")
    run_id = commits.new_run_id()
    space = commits.read_space(spark, pca_uri)
    in_space = dict(space["features_runs"]) if space else {}
    published = tables.current_files(features_uri)
    changed, gone = published_changes(spark, features_uri, published, in_space)
    kept = {batch: run for batch, run in in_space.items() if batch not in changed and batch not in gone}
    batches = {**kept, **{batch: commit["run"] for batch, commit in changed.items()}}
    if not batches:
        raise UsageError(f"--features {args.features}: no committed features (run the features job first)")
    made_by, extractor_change = space_extractor(space, changed, kept, args.change_extractor)
    if extractor_change and args.refit == "never":
        raise UsageError("--refit never keeps the current space, but --change-extractor needs a new one")

    # 2. The running totals: the space's state plus the new batches, or rebuilt when a batch of the
    #    space was replaced or withdrawn (never counted twice).
    new = {batch: batch_moments(spark, commit) for batch, commit in changed.items()}
    new_total = BatchMoments.empty(FEATURE_DIM)
    for found in new.values():
        new_total = new_total.merge(found)
    rebuilt = space is None or len(kept) < len(in_space)
    if rebuilt:
        totals = new_total
        for batch in kept:
            totals = totals.merge(batch_moments(spark, commit_of(spark, features_uri, batch, published)))
    else:
        assert space is not None
        totals = read_state(spark, space).merge(new_total)

    # 3. Drift, and the decision.
    rule = spaces.k_rule(args.k, args.variance)
    basis = read_basis(spark, space["basis"]) if space else None
    drift = spaces.measure_drift(space, basis, new_total, totals)
    try:
        reason = extractor_change or spaces.refit_reason(space, args.refit, rule, drift)
        if reason is not None:
            basis = spaces.fit_basis(totals.moments, rule)
    except spaces.SpaceError as exc:
        raise UsageError(f"--features {args.features}: {exc}") from None
    assert basis is not None
    space_id = run_id if reason is not None or space is None else space["space"]
    space_uri = layout.space_folder(pca_uri, space_id)
    if reason is not None:
        model = pca_model(spark, basis)
        model.write().save(f"{space_uri}/{layout.PCA_MODEL_DIR}")
        hadoop_fs.write_bytes_atomically(spark, f"{space_uri}/{layout.BASIS_FILE}", basis_bytes(basis))
        to_project = {b: changed.get(b) or commit_of(spark, features_uri, b, published) for b in batches}
        vectors: dict[str, str] = {}
        confusion: dict = {}
    else:
        assert space is not None
        model = PCAModel.load(space["model"])
        to_project = changed
        vectors = {batch: space["vectors"][batch] for batch in kept if batch in space["vectors"]}
        confusion = quality.counts_from_json(json.loads(hadoop_fs.read_text(spark, space["metrics"]))["confusion"])
        if rebuilt:  # the withdrawn or replaced batches' counts leave with them
            confusion = {}
            for folder in vectors.values():
                confusion = add_counts(confusion, read_confusion(spark, folder))

    # 4. Project, then commit.
    scoring = Scoring(totals, basis)
    scoring_or_none = scoring if len(scoring.centroids) >= 2 else None
    rows_read = 0
    for batch, commit in sorted(to_project.items()):
        vectors[batch] = layout.vectors_folder(pca_uri, space_id, batch, run_id)
        if commit.get("featurized"):
            counts = project_batch(spark, model, batch, commit, vectors[batch], scoring_or_none)
            confusion = add_counts(confusion, counts)
            rows_read += commit.get("featurized") or 0
        else:  # no featurized photo: one file without rows, so the table names this run (tables.current_space)
            spark.createDataFrame([], VECTORS_COLUMNS).coalesce(1).write.mode("errorifexists").parquet(vectors[batch])
    run_uri = layout.space_run_folder(pca_uri, space_id, run_id)
    hadoop_fs.write_bytes_atomically(spark, f"{run_uri}/{layout.STATE_FILE}", totals.to_bytes())
    metrics = space_metrics(args, space, space_id, run_id, basis, rule, totals, reason, drift, rows_read)
    # What `fruits similar` featurizes a query photo with: the space's batches' weights and size.
    weights = next((r["weights"] for _, r in sorted(changed.items()) if r.get("weights")), (space or {}).get("weights"))
    metrics.update(
        extractor=made_by,
        weights=weights,
        image_size=(made_by or {}).get("image_size") or (space or {}).get("image_size"),
        added=sorted(to_project),
        withdrawn=sorted(gone),
        vectors=dict(sorted(vectors.items())),
        features_runs=dict(sorted(batches.items())),
        model=f"{space_uri}/{layout.PCA_MODEL_DIR}",
        basis=f"{space_uri}/{layout.BASIS_FILE}",
        state=f"{run_uri}/{layout.STATE_FILE}",
        metrics=f"{run_uri}/{layout.PCA_METRICS_FILE}",
        confusion=quality.counts_to_json(confusion),
        class_quality=quality.summarize(confusion, scoring.fitted_on, scoring.evaluated_on) if confusion else None,
    )
    write_plots(spark, metrics, space, space_uri, run_uri, basis, reason is not None, list(vectors.values()))
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    # The run's record, whole, before the switch: the vectors table's commit then names this run (its
    # files' folders), so the space, every batch's vectors in it and the figures become current together.
    stored = layout.refer_record(metrics, layout.root_of_batch_folder(pca_uri))
    hadoop_fs.write_bytes_atomically(spark, metrics["metrics"], json.dumps(stored, indent=2, allow_nan=False).encode())
    metrics["record"] = metrics["metrics"]
    metrics["vectors_version"] = publish_vectors(spark, pca_uri, metrics, whole=len(to_project) == len(batches))
    current = commits.read_space(spark, pca_uri)  # this run's, unless its commit changed nothing
    if current is not None:
        commits.clean_spaces(spark, pca_uri, current, commits.retention_cutoff(args.retention_hours))
    tables.vacuum(layout.vectors_table(pca_uri), args.retention_hours)  # replaced and killed runs' vectors
    return metrics


def publish_vectors(spark, pca_uri: str, metrics: dict, whole: bool) -> int:
    """The run's vectors into the vectors Delta table (tables.py), in one commit: the table holds the
    current space only (a consumer reads one space, no filter), partitioned by space and batch. whole
    (every batch projected: a new space, or the first run with the table): every file is replaced;
    else the partitions of the batches this run added or withdrew."""
    space = metrics["space"]
    touched = set(metrics["added"]) | set(metrics["withdrawn"])
    new_files: dict[tuple[str, ...], list[tables.DataFile]] = {
        (space, batch): tables.parquet_files(f"{folder}/{name}" for name in hadoop_fs.data_files(spark, folder))
        for batch, folder in metrics["vectors"].items()
        if whole or batch in touched
    }
    version = tables.publish(
        layout.vectors_table(pca_uri),
        tables.VECTORS_SCHEMA,
        [tables.SPACE_COLUMN, layout.PARTITION_COLUMN],
        new_files,
        (lambda partition: True) if whole else (lambda partition: partition.get(layout.PARTITION_COLUMN) in touched),
        {"run": metrics["run"], "space": space, "new_space": metrics["new_space"]},
    )
    print(f"tables: space {space} published to the vectors table, version {version}", file=sys.stderr)
    return version


def commit_of(spark, features_uri: str, batch: str, published: dict[str, list[str]]) -> dict:
    """A published batch's record, with its current files (published: tables.current_files)."""
    if batch not in published:
        raise UsageError(f"--features {features_uri}: batch {batch} is no longer published; see `fruits check`")
    run = tables.run_of_files(features_uri, batch, published[batch])
    return {**commits.read_record(spark, features_uri, batch, run), "files": published[batch]}


def read_confusion(spark, vectors_uri: str) -> dict:
    path = layout.confusion_path(vectors_uri)
    return (
        quality.counts_from_json(json.loads(hadoop_fs.read_text(spark, path))) if hadoop_fs.exists(spark, path) else {}
    )


def space_metrics(args, space, space_id, run_id, basis, rule, totals, reason, drift, rows_read) -> dict:
    """What a run's metrics.json (and its commit) hold besides the references: the space, k and its
    rule, the spectrum at fit, the drift figures, and what the run read and wrote."""
    fitted_new = reason is not None
    cumulative = np.cumsum(basis.spectrum)
    k = basis.k
    return {
        "job": "reduce_dimensions",
        "run": run_id,
        "space": space_id,
        "new_space": fitted_new,
        # The space current before this one was fitted: kept whole while this one is current, so a
        # reader who resolved it just before the switch can finish.
        "previous_space": (space["space"] if space else None) if fitted_new else space.get("previous_space"),
        "refit_reason": reason,
        "refit_rule": args.refit,
        "k": k,
        "k_rule": rule if fitted_new else space["k_rule"],
        "variance_target": (rule if fitted_new else space["k_rule"])["variance"],
        "input_dim": len(basis.mean),
        "n_images": totals.moments.n,
        "fitted_on_images": totals.moments.n if fitted_new else space["fitted_on_images"],
        "kept_at_fit": round(basis.kept_at_fit, 6),
        # What the space keeps of photos it was not fitted on, and the classes it was fitted on: the
        # references of the drift signals (spaces.py).
        "kept_heldout": round(spaces.kept_heldout(totals.halves, k), 6) if fitted_new else space["kept_heldout"],
        "fitted_labels": sorted(totals.labels()) if fitted_new else space["fitted_labels"],
        "explained_variance": [round(float(v), 8) for v in basis.spectrum[:k]],
        "cumulative_explained_variance": [round(float(v), 8) for v in cumulative[:k]],
        "total_explained_variance": round(float(cumulative[k - 1]), 6),
        # Of every photo so far, from the running moments (not re-read): what the basis keeps now.
        "kept_of_all_photos": round(spaces.kept_share(basis, totals.moments), 6),
        "drift": drift.as_dict(),
        "rows_read": rows_read,
        "rows_written": rows_read,
        "plots": {},
    }


def write_plots(spark, metrics, space, space_uri, run_uri, basis, fitted_new: bool, vector_uris) -> None:
    """The explained-variance curve and the scatter belong to a space (drawn when it is fitted); the
    per-class quality to a run."""
    from pyspark.sql import functions as F

    with tempfile.TemporaryDirectory() as tmp:
        if fitted_new:
            curve = os.path.join(tmp, layout.PCA_PLOTS["explained_variance"])
            plot_explained_variance(np.cumsum(basis.spectrum), basis.k, metrics["variance_target"], curve)
            hadoop_fs.write_bytes_from_file(spark, curve, f"{space_uri}/{layout.PCA_PLOTS['explained_variance']}")
            if vector_uris:
                n = max(1, metrics["n_images"])
                sample = (
                    spark.read.parquet(*vector_uris)
                    .sample(fraction=min(1.0, SCATTER_SAMPLE / n), seed=7)
                    .select("label", F.col("pca")[0].alias("x"), F.col("pca")[1].alias("y"))
                    .collect()
                )
                scatter = os.path.join(tmp, layout.PCA_PLOTS["scatter"])
                plot_scatter(
                    [r["label"] or "(no label)" for r in sample],
                    [r["x"] for r in sample],
                    [r["y"] if basis.k > 1 else 0.0 for r in sample],
                    basis.spectrum[:2],
                    scatter,
                )
                hadoop_fs.write_bytes_from_file(spark, scatter, f"{space_uri}/{layout.PCA_PLOTS['scatter']}")
        for kind in ("explained_variance", "scatter"):  # the space's own, drawn when it was fitted
            path = f"{space_uri}/{layout.PCA_PLOTS[kind]}"
            if hadoop_fs.exists(spark, path):
                metrics["plots"][kind] = path
        if metrics["class_quality"]:
            per_class = os.path.join(tmp, layout.PCA_PLOTS["class_quality"])
            plot_class_quality(metrics["class_quality"], per_class)
            metrics["plots"]["class_quality"] = f"{run_uri}/{layout.PCA_PLOTS['class_quality']}"
            hadoop_fs.write_bytes_from_file(spark, per_class, metrics["plots"]["class_quality"])


def main(argv=None) -> dict:
    args = parse_args(argv)
    # Arrow batches of 2,048 vectors: ~20 MB of float64 per batch in a Python worker, whatever n is.
    spark = spark_session("fruits-reduce-dimensions", {"spark.sql.execution.arrow.maxRecordsPerBatch": "2048"})
    try:
        metrics = run(spark, args)
    finally:
        spark.stop()
    emit_summary(metrics)
    return metrics
