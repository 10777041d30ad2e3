"""Step 2: PCA of the features: reduced vectors, the Spark ML model, metrics and two plots.

The spectrum comes from ONE streaming pass: each partition folds its rows into a count, a mean and
a d x d scatter matrix (mergeable moments), the driver merges them one partition at a time and
takes the eigen-decomposition of the covariance. Memory is d x d (1280^2 doubles, 13 MB) whatever
the number of images; nothing n x d is cached. "Smallest k reaching F" is then a cumulative sum,
not a refit loop, and the k-component model is the first k axes of that one decomposition, saved
as a Spark ML PCAModel (which projects; like Spark's own PCA it does not centre the vectors).
"""

import argparse
import json
import os
import tempfile
import time
from typing import NamedTuple

import numpy as np

from fruits_jobs import commits, hadoop_fs, layout, quality
from fruits_jobs.common import UsageError, emit_summary, spark_session
from fruits_jobs.plots import plot_class_quality, plot_explained_variance, plot_scatter

SCATTER_SAMPLE = 20_000  # points drawn in the scatter plot: enough to see structure, cheap to collect


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="reduce_dimensions.py", description=__doc__.split("\n")[0])
    p.add_argument("--features", required=True, help="features dataset root written by extract_features.py")
    p.add_argument(
        "--output",
        required=True,
        help="folder of the PCA's runs: run=<id>/ (reduced/, model/, "
        "metrics.json, plots) and _commits/<id>.json, whose newest names the current run",
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--k", type=int, help="number of components")
    group.add_argument("--variance", type=float, help="smallest k whose cumulative explained variance reaches this")
    p.add_argument(
        "--batch-id", action="append", dest="batch_ids", help="only these batches (repeatable); default: all batches"
    )
    args = p.parse_args(argv)
    if args.k is not None and args.k < 1:
        raise UsageError(f"--k {args.k}: expected a positive integer")
    if args.variance is not None and not 0.0 < args.variance <= 1.0:
        raise UsageError(f"--variance {args.variance}: expected a number in (0, 1]")
    return args


def choose_k(explained_variance, k=None, variance=None) -> int:
    """k as asked, or the smallest k whose cumulative explained variance reaches `variance`."""
    ratios = np.asarray(explained_variance, dtype=np.float64)
    if k is not None:
        if k > len(ratios):
            raise UsageError(f"--k {k}: the features have only {len(ratios)} components")
        return int(k)
    cumulative = np.cumsum(ratios)
    # float sums may end a hair under 1.0: a target of 1.0 then means "all components"
    reached = np.nonzero(cumulative >= variance - 1e-9)[0]
    return int(reached[0]) + 1 if len(reached) else len(ratios)


class Moments(NamedTuple):
    """Count, mean and centred scatter matrix (d x d) of a set of rows: mergeable, so one pass
    over any number of rows needs memory for d x d numbers only (Chan et al.'s pairwise update)."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> "Moments":
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0)
        centred = x - mean
        return cls(len(x), mean, centred.T @ centred)

    def merge(self, other: "Moments") -> "Moments":
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(
            n, self.mean + delta * (other.n / n), self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        )


def spectrum_and_components(moments: Moments):
    """Explained variance ratios (descending) and the principal axes (columns) of the covariance."""
    covariance = moments.m2 / (moments.n - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending, for a symmetric matrix
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)  # rounding can leave tiny negatives
    return eigenvalues / eigenvalues.sum(), eigenvectors[:, order]


def moments_udf(dim: int):
    """mapInPandas function: one row per partition with its Moments (as bytes), or the first path
    whose vector is not `dim` finite numbers: the pass that gives the spectrum, streaming."""

    def partition_moments(batches):
        import pandas as pd

        acc, bad = Moments(0, np.zeros(dim), np.zeros((dim, dim))), None
        for pdf in batches:
            vectors = pdf["features"].to_numpy()
            ok = np.array([v is not None and len(v) == dim and np.isfinite(v).all() for v in vectors])
            if not ok.all():
                bad = bad or str(pdf["path"].to_numpy()[~ok][0])
                continue
            if len(vectors):
                acc = acc.merge(Moments.of(np.stack(vectors)))
        yield pd.DataFrame({"n": [acc.n], "mean": [acc.mean.tobytes()], "m2": [acc.m2.tobytes()], "bad_path": [bad]})

    return partition_moments


def fit_moments(df, dim: int) -> Moments:
    """One pass over the features; partitions reach the driver one at a time (toLocalIterator)."""
    schema = "n long, mean binary, m2 binary, bad_path string"
    total = Moments(0, np.zeros(dim), np.zeros((dim, dim)))
    for row in df.select("path", "features").mapInPandas(moments_udf(dim), schema).toLocalIterator():
        if row["bad_path"]:
            raise UsageError(
                f"--features: {row['bad_path']} does not hold {dim} finite numbers; "
                "re-run the features job for its batch (it rejects such rows)"
            )
        if row["n"]:
            total = total.merge(
                Moments(row["n"], np.frombuffer(row["mean"]), np.frombuffer(row["m2"]).reshape(dim, dim))
            )
    return total


def pca_model(spark, components: np.ndarray, explained_variance: np.ndarray, input_col: str, output_col: str):
    """A fitted Spark ML PCAModel from our own components (d x k), so Spark projects and saves it."""
    from pyspark.ml.common import _py2java
    from pyspark.ml.feature import PCA, PCAModel
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    sc = spark.sparkContext
    d, k = components.shape
    # Still the best way: Spark ML has no public constructor for a fitted model, PCA.fit would re-read
    # every vector (it ran out of the 1 GB driver heap at 250k rows), and writing the model's files by
    # hand would copy Spark's private format. So its JVM class is built directly, with the matrices
    # pickled across (not copied element by element through py4j).
    jmodel = sc._jvm.org.apache.spark.ml.feature.PCAModel(
        PCA().uid,
        _py2java(sc, DenseMatrix(d, k, np.asarray(components, dtype=np.float64).ravel(order="F"))),
        _py2java(sc, DenseVector(np.asarray(explained_variance, dtype=np.float64))),
    )
    model = PCAModel(jmodel)
    model._set(k=k, inputCol=input_col, outputCol=output_col)
    model._transfer_params_to_java()
    return model


def read_features(spark, features_uri: str, batch_ids):
    """The current features of every batch (or of those asked for), through their commits."""
    from pyspark.sql import functions as F

    if not hadoop_fs.exists(spark, features_uri):
        raise UsageError(f"--features {features_uri}: no such dataset")
    df = commits.read_current(spark, features_uri, "features", batch_ids)
    if df is None:
        raise UsageError(
            f"--features {features_uri}: no committed features"
            + (f" for batches {batch_ids}" if batch_ids else "")
            + " (run the features job first)"
        )
    return df.select("path", "label", "split", F.col("batch_id").cast("string"), "features")


def pca_metrics(
    args, features_uri: str, output_uri: str, n: int, dim: int, k: int, spectrum, class_quality: dict | None
) -> dict:
    """What a PCA run's metrics.json and commit hold: sizes, k and its rule, the spectrum, where the
    reduced vectors, the model and the plots are. Readers (publish_summary, the CLI) rely on these keys."""
    cumulative = np.cumsum(spectrum)
    return {
        "job": "reduce_dimensions",
        "features": features_uri,
        "output": output_uri,
        "batch_ids": args.batch_ids,
        "n_images": n,
        "input_dim": dim,
        "k": k,
        "k_rule": f"k={args.k}" if args.k is not None else f"cumulative explained variance >= {args.variance}",
        "variance_target": args.variance,
        "explained_variance": [round(float(v), 8) for v in spectrum[:k]],
        "cumulative_explained_variance": [round(float(v), 8) for v in cumulative[:k]],
        "total_explained_variance": round(float(cumulative[k - 1]), 6),
        "plots": {kind: f"{output_uri}/{name}" for kind, name in layout.PCA_PLOTS.items()},
        "class_quality": class_quality,
        "reduced": f"{output_uri}/{layout.PCA_REDUCED_DIR}",
        "model": f"{output_uri}/{layout.PCA_MODEL_DIR}",
    }


def run(spark, args) -> dict:
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.sql import functions as F

    started = time.perf_counter()
    features_uri = hadoop_fs.qualify(spark, args.features).rstrip("/")
    folder_uri = hadoop_fs.qualify(spark, args.output).rstrip("/")
    run_id = commits.new_run_id()
    output_uri = layout.run_folder(folder_uri, run_id)  # this run's own folder; current once committed
    df = read_features(spark, features_uri, args.batch_ids)
    first = df.select(F.size("features").alias("d")).first()
    if first is None:
        raise UsageError(
            f"--features {args.features}: 0 feature vectors"
            + (f" in batches {args.batch_ids}" if args.batch_ids else "")
            + "; PCA needs at least 2"
        )
    dim = first["d"]
    moments = fit_moments(df, dim)  # nothing n x d is cached: memory is d x d, whatever n is
    n = moments.n
    if n < 2:
        raise UsageError(f"--features {args.features}: {n} feature vector(s); PCA needs at least 2")
    if not moments.m2.diagonal().any():
        raise UsageError(
            f"--features {args.features}: all {n} feature vectors are identical; there is no variance to explain"
        )
    spectrum, components = spectrum_and_components(moments)
    if args.k is not None and args.k > min(dim, n - 1):
        raise UsageError(
            f"--k {args.k}: {n} feature vectors of {dim} values have at most "
            f"{min(dim, n - 1)} principal components; pass a smaller --k or use --variance"
        )
    k = choose_k(spectrum, args.k, args.variance)
    model = pca_model(spark, components[:, :k], spectrum[:k], "vec", "pca_vec")

    reduced = model.transform(df.withColumn("vec", array_to_vector(F.col("features")))).select(
        "path", "label", "split", "batch_id", vector_to_array(F.col("pca_vec"), "float32").alias("pca")
    )
    reduced_uri, model_uri = f"{output_uri}/{layout.PCA_REDUCED_DIR}", f"{output_uri}/{layout.PCA_MODEL_DIR}"
    reduced.write.mode("overwrite").parquet(reduced_uri)
    model.write().overwrite().save(model_uri)
    reduced_back = spark.read.parquet(reduced_uri)  # what was written, not a second projection

    cumulative = np.cumsum(spectrum)
    metrics = pca_metrics(args, features_uri, output_uri, n, dim, k, spectrum, quality.class_quality(reduced_back))
    sample = (
        reduced.sample(fraction=min(1.0, SCATTER_SAMPLE / n), seed=7)
        .select("label", F.col("pca")[0].alias("x"), F.col("pca")[1].alias("y"))
        .collect()
    )
    with tempfile.TemporaryDirectory() as tmp:
        curve = os.path.join(tmp, layout.PCA_PLOTS["explained_variance"])
        plot_explained_variance(cumulative, k, args.variance, curve)
        hadoop_fs.write_bytes_from_file(spark, curve, metrics["plots"]["explained_variance"])
        scatter = os.path.join(tmp, layout.PCA_PLOTS["scatter"])
        plot_scatter(
            [r["label"] for r in sample],
            [r["x"] for r in sample],
            [r["y"] if k > 1 else 0.0 for r in sample],
            spectrum[:2],
            scatter,
        )
        hadoop_fs.write_bytes_from_file(spark, scatter, metrics["plots"]["scatter"])
        if metrics["class_quality"]:
            per_class = os.path.join(tmp, layout.PCA_PLOTS["class_quality"])
            plot_class_quality(metrics["class_quality"], per_class)
            hadoop_fs.write_bytes_from_file(spark, per_class, metrics["plots"]["class_quality"])
        else:
            del metrics["plots"]["class_quality"]  # no labels: no figure
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    metrics["run"] = run_id
    hadoop_fs.write_text(
        spark, f"{output_uri}/{layout.PCA_METRICS_FILE}", json.dumps(metrics, indent=2, allow_nan=False)
    )
    # The switch: reduced/, model/, metrics and plots become the output's current version together.
    metrics["commit"] = commits.write_commit(spark, folder_uri, run_id, metrics)
    commits.clean_superseded(spark, folder_uri, [folder_uri], run_id)
    return metrics


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
