"""`make bench-pca` / `make bench-memory`: the Spark jobs' memory does not grow with the number of images.

    python bench/bench_memory.py [--pca-rows N[,N...]] [--features-images N[,N...]] [--master local[2]]

(1) PCA (`--pca-rows`, default 250000 when neither flag is given): a synthetic features dataset
    with N rows, written as the features job writes it (Parquet under batch_id=bench/: path,
    label, split, sha256, features array<float> of 1280 non-negative values with a decaying
    spectrum), then `reduce_dimensions.py --variance 0.95` under spark-submit with NO
    --driver-memory: the driver JVM, which also hosts the local executors, keeps spark-submit's
    default 1 GB heap. The job folds rows into d x d moments, so it must pass whatever N is;
    a failure (e.g. java.lang.OutOfMemoryError) is reported with its exit code, not raised.
    The generated dataset is cached under artifacts/bench/pca-<N>/ (~0.9 GB at 250,000 rows).
(2) Features (`--features-images`): N images hard-linked from the shared Fruits-360 sample into
    their class folders, then the features job, launched as the DAG's local backend launches it
    (as bench_features.py does). Several sizes side by side with the ratio of peak memory
    (largest/smallest size): ~1.0 if memory does not grow with the number of images.

Memory is sampled every 0.2 s: the summed RSS of the whole process tree (spark-submit's JVM, the
Python driver, the Python workers; forked workers' shared pages count once per process, as in
bench_features.py), the JVM's own RSS, and the largest single Python worker's. Results go to
artifacts/bench/memory.json (each part keeps its previous results when only the other one runs).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from fruits.backends.jobs import SparkJob
from fruits.backends.local.runner import command
from fruits_jobs import commits, layout
from fruits_jobs.contract import FEATURE_DIM, PCA_ENTRYPOINT

# bench/ is on sys.path (this script's folder): one place for the shared paths
from bench_features import REPO, SAMPLE, WEIGHTS
from measure import features_job, peak_rss, publish_batch

OUT = REPO / "artifacts" / "bench"
CHUNK_ROWS = 10_000  # rows generated at a time and per row group: ~50 MB of float32
ROWS_PER_FILE = 50_000  # as the features job's ROWS_PER_OUTPUT_FILE
# Synthetic spectrum: RANK latent factors with power-law scales, per-dimension bias, a little
# noise, then ReLU. Gives ~40 % zeros, mean ~0.35 and k ~300 at 95 % variance, close to
# MobileNetV2's pooled outputs on Fruits-360.
RANK, DECAY, NOISE, LABELS = 256, 0.5, 0.05, 20
FEATURES_TYPE = pa.list_(pa.field("element", pa.float32()))  # Spark's array<float> in Parquet
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("label", pa.string()),
        ("split", pa.string()),
        ("sha256", pa.string()),
        ("features", FEATURES_TYPE),
    ]
)


def chunk_table(first_row: int, labels: np.ndarray, x: np.ndarray) -> pa.Table:
    names = [f"Class{label:02d}" for label in labels]
    paths = [f"file:/bench/synthetic/Training/{name}/img{first_row + i:07d}.jpg" for i, name in enumerate(names)]
    offsets = pa.array(np.arange(0, x.size + 1, FEATURE_DIM, dtype=np.int32))
    features = pa.ListArray.from_arrays(offsets, pa.array(x.ravel()), type=FEATURES_TYPE)
    return pa.table(
        [paths, names, ["Training"] * len(x), [hashlib.sha256(p.encode()).hexdigest() for p in paths], features],
        schema=SCHEMA,
    )


def synthetic_features(rows: int) -> Path:
    """OUT/pca-<rows>/ (generated once, then reused): written CHUNK_ROWS at a time, never n x d at
    once, and published as the features job publishes a batch: one run folder, its record and the
    features table's commit. Returns the features table's folder."""
    dest = OUT / f"pca-{rows}"
    if (dest / "features" / "_delta_log").is_dir():
        return dest / "features"
    partial = OUT / f"pca-{rows}.partial"  # renamed when complete: an interrupted run is not reused
    shutil.rmtree(partial, ignore_errors=True)
    run_id = commits.new_run_id()
    run_folder = Path(layout.run_folder(layout.batch_folder(str(partial / "features"), "bench"), run_id))
    run_folder.mkdir(parents=True)
    fixed = np.random.default_rng(0)
    basis = np.linalg.qr(fixed.standard_normal((FEATURE_DIM, RANK)))[0].T.astype(np.float32)
    scales = (3.0 * np.arange(1, RANK + 1) ** -DECAY).astype(np.float32)
    bias = fixed.normal(0.125, 0.625, FEATURE_DIM).astype(np.float32)
    centres = fixed.standard_normal((LABELS, RANK)).astype(np.float32) * 0.8  # class clusters
    rng, writer = np.random.default_rng(1), None
    print(f"generating {rows} synthetic feature vectors into {dest} ...", flush=True)
    for start in range(0, rows, CHUNK_ROWS):
        if start % ROWS_PER_FILE == 0:
            if writer:
                writer.close()
            writer = pq.ParquetWriter(run_folder / f"part-{start // ROWS_PER_FILE:05d}.parquet", SCHEMA)
        m = min(CHUNK_ROWS, rows - start)
        labels = rng.integers(0, LABELS, m)
        z = (rng.standard_normal((m, RANK), dtype=np.float32) + centres[labels]) * scales
        x = z @ basis + bias + NOISE * rng.standard_normal((m, FEATURE_DIM), dtype=np.float32)
        writer.write_table(chunk_table(start, labels, np.maximum(x, 0)), row_group_size=CHUNK_ROWS)
    writer.close()
    shutil.rmtree(dest, ignore_errors=True)  # a dataset of an older layout, without its table
    partial.rename(dest)
    features = dest / "features"
    publish_batch(features, "bench", run_id, {"features": layout.run_folder(str(features / "batch_id=bench"), run_id)})
    return features


def link_images(src: Path, dest: Path, n: int) -> int:
    """Exactly n of src's JPEGs under dest/copy<i>/<split>/<class>/, hard-linked (copied across
    file systems). bench_features.prepare_images copies whole rounds of the sample instead."""
    jpgs = sorted(src.rglob("*.jpg"))
    if not jpgs:
        raise SystemExit(f"no .jpg under {src}")
    for i in range(n):
        jpg = jpgs[i % len(jpgs)]
        target = dest / f"copy{i // len(jpgs)}" / jpg.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(jpg, target)
        except OSError:
            shutil.copyfile(jpg, target)
    return n


def run_measured(cmd, env, log: Path) -> dict:
    """Run cmd (stderr to log), peak memory sampled every 0.2 s; its JSON summary if it succeeded."""
    with open(log, "w") as err:
        proc = psutil.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        started = time.perf_counter()
        with peak_rss(proc) as peaks:
            out, _ = proc.communicate()
        wall = time.perf_counter() - started
    result = {
        "exit_code": proc.returncode,
        "wall_s": round(wall, 1),
        **{f"peak_{key}_rss_mb": round(value / 2**20) for key, value in peaks.items()},
    }
    lines = [line for line in out.splitlines() if line.strip()]
    if proc.returncode == 0 and lines:
        result["summary"] = json.loads(lines[-1])
    else:
        errors = log.read_text(errors="replace").splitlines()
        oom = [line for line in errors if "OutOfMemoryError" in line or "MemoryError" in line]
        other = [line for line in errors if "Error" in line or "Exception" in line]
        result["error"] = (oom or other or errors or ["(no output)"])[0 if oom else -1].strip()[:300]
        result["log_tail"] = errors[-30:]
    return result


def bench_pca(rows: int, work: Path, env: dict, spark_submit: str, master: str) -> dict:
    data = synthetic_features(rows)
    job = SparkJob(
        name="reduce_dimensions",
        entrypoint=str(REPO / "spark_jobs" / PCA_ENTRYPOINT),
        py_files=(),
        args=("--features", str(data), "--output", str(work / f"pca-{rows}"), "--variance", "0.95"),
        conf={"spark.ui.enabled": "false"},
        timeout_s=7200,
    )
    print(f"PCA: {rows} rows, driver heap: spark-submit's default (1 GB) ...", flush=True)
    result = run_measured(command(job, spark_submit, master), env, work / f"pca-{rows}.log")
    summary = result.pop("summary", {})
    shutil.rmtree(work / f"pca-{rows}", ignore_errors=True)
    return {
        "rows": rows,
        "n_images": summary.get("n_images"),
        "k": summary.get("k"),
        "explained_variance": summary.get("total_explained_variance"),
        "seconds": summary.get("seconds"),
        **result,
    }


def bench_features(n: int, work: Path, env: dict, spark_submit: str, master: str, weights: str) -> dict:
    images, out = work / f"images-{n}", work / f"out-{n}"
    link_images(SAMPLE, images, n)
    job = features_job(images, out, "bench", weights, timeout_s=6 * 3600)
    print(f"features: {n} images, weights {weights} ...", flush=True)
    result = run_measured(command(job, spark_submit, master), env, work / f"features-{n}.log")
    summary = result.pop("summary", {})
    for folder in (images, out):
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "images": n,
        "featurized": summary.get("featurized"),
        "seconds": summary.get("seconds"),
        "images_per_s": summary.get("images_per_s"),
        **result,
    }


def print_table(title: str, runs: list, fields: list, size_key: str) -> None:
    """One column per size; past one size, a last column with the peak-memory ratio largest/smallest."""
    ratio = len(runs) > 1
    print(f"\n{title}")
    print(f"{'':24}" + "".join(f"{r[size_key]:>12,}" for r in runs) + (f"{'big/small':>11}" if ratio else ""))
    for key, label in fields:
        row = f"{label:24}" + "".join(f"{'-' if r.get(key) is None else r[key]:>12}" for r in runs)
        if ratio and key.startswith("peak_") and runs[0].get(key) and runs[-1].get(key):
            row += f"{runs[-1][key] / runs[0][key]:>11.2f}"
        print(row)
    for r in runs:
        if r["exit_code"] != 0:
            print(f"  FAILED at {r[size_key]:,}: exit code {r['exit_code']}: {r['error']}")


def sizes(text: str) -> list:
    return sorted(int(s.replace("_", "")) for s in text.split(",") if s.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--pca-rows",
        type=sizes,
        help="synthetic feature vectors, e.g. 250000 (the default when --features-images is not given either)",
    )
    ap.add_argument("--features-images", type=sizes, help="images for the features job, e.g. 10000,50000")
    ap.add_argument("--weights", default=str(WEIGHTS) if WEIGHTS.is_file() else "random")
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args()
    if args.pca_rows is None and args.features_images is None:
        args.pca_rows = [250_000]
    if args.features_images and not SAMPLE.is_dir():
        raise SystemExit(f"no images at {SAMPLE} (set FRUITS_SHARED_DIR)")

    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("SPARK_DRIVER_MEMORY", None)  # the point: spark-submit's default driver heap
    spark_submit = str(Path(sys.executable).with_name("spark-submit"))
    OUT.mkdir(parents=True, exist_ok=True)
    report_path = OUT / "memory.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report.update(master=args.master, cores=os.cpu_count())
    work = Path(tempfile.mkdtemp(prefix="fruits-bench-memory-"))
    try:
        if args.pca_rows:
            runs = [bench_pca(n, work, env, spark_submit, args.master) for n in args.pca_rows]
            report["pca"] = {"driver_memory": "spark-submit default (1g)", "variance": 0.95, "runs": runs}
        if args.features_images:
            runs_f = [
                bench_features(n, work, env, spark_submit, args.master, args.weights) for n in args.features_images
            ]
            report["features"] = {"weights": args.weights, "runs": runs_f}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.pca_rows:
        print_table(
            f"PCA, --variance 0.95, default 1 GB driver heap, {args.master}, {os.cpu_count()} cores",
            runs,
            [
                ("k", "k"),
                ("explained_variance", "explained variance"),
                ("seconds", "job seconds"),
                ("wall_s", "wall s"),
                ("peak_tree_rss_mb", "peak tree RSS MB"),
                ("peak_jvm_rss_mb", "peak JVM RSS MB"),
                ("exit_code", "exit code"),
            ],
            "rows",
        )
    if args.features_images:
        print_table(
            f"features job, weights {Path(args.weights).name}, {args.master}, {os.cpu_count()} cores",
            runs_f,
            [
                ("seconds", "job seconds"),
                ("images_per_s", "images/s"),
                ("wall_s", "wall s"),
                ("peak_tree_rss_mb", "peak tree RSS MB"),
                ("peak_jvm_rss_mb", "peak JVM RSS MB"),
                ("peak_worker_rss_mb", "peak worker RSS MB"),
                ("exit_code", "exit code"),
            ],
            "images",
        )
    report_path.write_text(json.dumps(report, indent=2))
    print(f"\nwritten: {report_path}")


if __name__ == "__main__":
    main()
