"""Step 2: PCA of the features: reduced vectors, the Spark ML model, metrics and two plots.

k comes from ONE fit over the full spectrum: the explained variance of every component is known
after it, so "smallest k reaching F" is a cumulative sum, not a refit loop. The k-component model
is then the first k principal components of that same fit.
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np

from fruits_jobs import contract, hadoop_fs
from fruits_jobs.common import UsageError, emit_summary, spark_session
from fruits_jobs.plots import plot_explained_variance, plot_scatter

SCATTER_SAMPLE = 20_000  # points drawn in the scatter plot: enough to see structure, cheap to collect


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="reduce_dimensions.py", description=__doc__.split("\n")[0])
    p.add_argument("--features", required=True, help="features dataset root written by extract_features.py")
    p.add_argument("--output", required=True, help="folder for reduced/, model/, metrics.json and the plots")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--k", type=int, help="number of components")
    group.add_argument("--variance", type=float, help="smallest k whose cumulative explained variance reaches this")
    p.add_argument("--batch-id", action="append", dest="batch_ids",
                   help="only these batches (repeatable); default: all batches")
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


def truncated_model(spark, full_model, k: int):
    """The k-component PCAModel: the first k columns of the full fit (same uid, same columns)."""
    from pyspark.ml.common import _py2java
    from pyspark.ml.feature import PCAModel
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    sc = spark.sparkContext
    pc = full_model.pc.toArray()[:, :k]
    # Spark ML has no public constructor for a fitted model; its JVM class is built directly,
    # with the matrices pickled across (not copied element by element through py4j).
    jmodel = sc._jvm.org.apache.spark.ml.feature.PCAModel(
        full_model.uid,
        _py2java(sc, DenseMatrix(pc.shape[0], k, pc.ravel(order="F"))),
        _py2java(sc, DenseVector(full_model.explainedVariance.toArray()[:k])),
    )
    model = PCAModel(jmodel)
    model._set(k=k, inputCol=full_model.getInputCol(), outputCol=full_model.getOutputCol())
    model._transfer_params_to_java()
    return model


def run(spark, args) -> dict:
    from pyspark.ml.feature import PCA
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.sql import functions as F

    started = time.perf_counter()
    features_uri = hadoop_fs.qualify(spark, args.features).rstrip("/")
    output_uri = hadoop_fs.qualify(spark, args.output).rstrip("/")
    if not hadoop_fs.exists(spark, features_uri):
        raise UsageError(f"--features {args.features}: no such dataset")
    df = spark.read.parquet(features_uri)
    if args.batch_ids:
        df = df.where(F.col("batch_id").isin(*args.batch_ids))
    df = df.select("path", "label", "split", F.col("batch_id").cast("string"),
                   array_to_vector("features").alias("vec")).cache()
    n = df.count()
    if n < 2:
        raise UsageError(f"--features {args.features}: {n} feature vector(s); PCA needs at least 2")
    dim = len(df.first()["vec"])

    full = PCA(k=dim, inputCol="vec", outputCol="pca_vec").fit(df)  # the full spectrum, once
    spectrum = full.explainedVariance.toArray()
    k = choose_k(spectrum, args.k, args.variance)
    model = truncated_model(spark, full, k) if k < dim else full

    reduced = (model.transform(df)
               .select("path", "label", "split", "batch_id",
                       vector_to_array("pca_vec", "float32").alias("pca")))
    reduced_uri, model_uri = f"{output_uri}/{contract.PCA_REDUCED_DIR}", f"{output_uri}/{contract.PCA_MODEL_DIR}"
    reduced.write.mode("overwrite").parquet(reduced_uri)
    model.write().overwrite().save(model_uri)

    cumulative = np.cumsum(spectrum)
    metrics = {
        "job": "reduce_dimensions", "features": features_uri, "output": output_uri,
        "batch_ids": args.batch_ids, "n_images": n, "input_dim": dim, "k": k,
        "k_rule": f"k={args.k}" if args.k is not None else f"cumulative explained variance >= {args.variance}",
        "variance_target": args.variance,
        "explained_variance": [round(float(v), 8) for v in spectrum[:k]],
        "cumulative_explained_variance": [round(float(v), 8) for v in cumulative[:k]],
        "total_explained_variance": round(float(cumulative[k - 1]), 6),
        "plots": {kind: f"{output_uri}/{name}" for kind, name in contract.PCA_PLOTS.items()},
        "reduced": reduced_uri, "model": model_uri,
    }
    sample = (reduced.sample(fraction=min(1.0, SCATTER_SAMPLE / n), seed=7)
              .select("label", F.col("pca")[0].alias("x"), F.col("pca")[1].alias("y")).collect())
    with tempfile.TemporaryDirectory() as tmp:
        curve = os.path.join(tmp, contract.PCA_PLOTS["explained_variance"])
        plot_explained_variance(cumulative, k, args.variance, curve)
        hadoop_fs.write_bytes_from_file(spark, curve, metrics["plots"]["explained_variance"])
        scatter = os.path.join(tmp, contract.PCA_PLOTS["scatter"])
        plot_scatter([r["label"] for r in sample], [r["x"] for r in sample],
                     [r["y"] if k > 1 else 0.0 for r in sample], spectrum[:2], scatter)
        hadoop_fs.write_bytes_from_file(spark, scatter, metrics["plots"]["scatter"])
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    hadoop_fs.write_text(spark, f"{output_uri}/{contract.PCA_METRICS_FILE}", json.dumps(metrics, indent=2))
    return metrics


def main(argv=None) -> dict:
    args = parse_args(argv)
    spark = spark_session("fruits-reduce-dimensions", {})
    try:
        metrics = run(spark, args)
    finally:
        spark.stop()
    emit_summary(metrics)
    return metrics
