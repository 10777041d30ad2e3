"""`make bench-growth`: the PCA step grows with the day, not with the lake (issue 20).

    python bench/growth.py [--days N] [--photos N] [--new-classes-day D] [--master local[2]]
    (or GROWTH_DAYS, GROWTH_PHOTOS, GROWTH_NEW_CLASSES_DAY; defaults 10 days x 20,000 photos, day 7)

Simulates a lake that grows by one batch a day. Each day, N synthetic 1280-d feature vectors are
written as the features job publishes a batch (Parquet under features/batch_id=dayNN/run=<run>/:
path, label, split, sha256, features array<float>; the batch's moments, BatchMoments computed with
numpy, as batch_runs/batch_id=dayNN/<run>.moments.npz; its record naming both, with `featurized`;
then the features table's commit, measure.publish_batch), and the REAL
PCA job (fruits_jobs.pca.run, `--variance 0.9`, `--refit auto`) runs in-process on one local Spark
session, as the DAG runs it after each batch. At the end, one forced refit (`--refit always`).

Synthetic features look like MobileNetV2's pooled outputs (bench_memory.py's recipe): RANK latent
factors with power-law scales, ~130 class centroids in them, noise, a per-dimension bias, ReLU
(~40 % zeros, k ~200 at 90 %); 75 % Training, 25 % Test. Known-class days draw the same classes,
so they must not refit; the new-classes day draws 30 other centroids, classes the space has never
seen: it must refit (their photos lose ~1.4x the variance known ones do, as real unseen fruit do).

Per day it prints the PCA step's wall time, rows read and written, whether it refitted and why,
the space, the vectors in the current space, and how many folder listings the step made (every
hadoop_fs.list_names call, counted by wrapping it: the one part that may grow with the batches).
Then the targets: (a) a day without a refit reads and writes exactly the day's photos; (b) day N's
step within 1.5x of day 2's (non-refit days); (c) the newest pca commit's vector folders hold
exactly the published photos (rows counted from their Parquet footers with pyarrow).
The lake is artifacts/bench/growth/lake/ (rebuilt each run); results in artifacts/bench/growth.json.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from fruits.backends.local.runner import LOCAL_DRIVER_JAVA_OPTIONS
from fruits_jobs import commits, hadoop_fs, layout, pca, quality, spaces
from fruits_jobs.common import spark_session
from fruits_jobs.contract import FEATURE_DIM
from fruits_jobs.moments import BatchMoments

# bench/ is on sys.path (this script's folder): one place for the shared paths and the schema
from bench_features import REPO
from bench_memory import FEATURES_TYPE, SCHEMA
from measure import publish_batch

OUT = REPO / "artifacts" / "bench"
LAKE = OUT / "growth" / "lake"
CHUNK_ROWS = 10_000  # rows generated (and moments added) at a time, one Parquet row group each
ROWS_PER_FILE = 50_000  # as the features job's ROWS_PER_OUTPUT_FILE
RANK, DECAY, NOISE = 320, 0.5, 0.05
KNOWN_CLASSES, NEW_CLASSES = 130, 30
TEST_SHARE = 0.25
TARGET_RATIO = 1.5


class Generator:
    """Fixed latent directions, scales, bias and class centroids (seed 0); each day draws its photos
    with a seed of its own, so a run is reproducible."""

    def __init__(self):
        fixed = np.random.default_rng(0)
        self.axes = np.linalg.qr(fixed.standard_normal((FEATURE_DIM, RANK)))[0].T.astype(np.float32)
        self.scales = (3.0 * np.arange(1, RANK + 1) ** -DECAY).astype(np.float32)
        self.bias = fixed.normal(0.125, 0.625, FEATURE_DIM).astype(np.float32)
        self.known = fixed.standard_normal((KNOWN_CLASSES, RANK)).astype(np.float32) * 0.8
        self.new = fixed.standard_normal((NEW_CLASSES, RANK)).astype(np.float32) * 0.8

    def chunk(self, rng, n: int, new_classes: bool) -> tuple[np.ndarray, list[str], list[str]]:
        """n vectors (float32, non-negative), their labels and splits."""
        classes = rng.integers(0, NEW_CLASSES if new_classes else KNOWN_CLASSES, n)
        centres = (self.new if new_classes else self.known)[classes]
        x = ((rng.standard_normal((n, RANK), dtype=np.float32) + centres) * self.scales) @ self.axes
        x += self.bias + NOISE * rng.standard_normal((n, FEATURE_DIM), dtype=np.float32)
        labels = [f"New{c:02d}" if new_classes else f"Class{c:03d}" for c in classes]
        splits = np.where(rng.random(n) < TEST_SHARE, "Test", "Training").tolist()
        return np.maximum(x, 0.0), labels, splits


def publish_day(gen: Generator, day: int, photos: int, new_classes: bool) -> str:
    """One batch, as the features job publishes it: run folder (Parquet), moments, record, commit."""
    batch = f"day{day:02d}"
    folder = layout.batch_folder(str(LAKE / "features"), batch)
    run_id = commits.new_run_id()
    run_folder = Path(layout.run_folder(folder, run_id))
    run_folder.mkdir(parents=True)
    rng = np.random.default_rng(1000 + day)
    acc, writer = BatchMoments.empty(FEATURE_DIM), None
    for start in range(0, photos, CHUNK_ROWS):
        if start % ROWS_PER_FILE == 0:
            if writer:
                writer.close()
            writer = pq.ParquetWriter(run_folder / f"part-{start // ROWS_PER_FILE:05d}.parquet", SCHEMA)
        x, labels, splits = gen.chunk(rng, min(CHUNK_ROWS, photos - start), new_classes)
        paths = [
            f"file:/landing/{batch}/{split}/{label}/img{start + i:07d}.jpg"
            for i, (split, label) in enumerate(zip(splits, labels, strict=True))
        ]
        acc = acc.add_rows(x, splits, labels, paths)
        offsets = pa.array(np.arange(0, x.size + 1, FEATURE_DIM, dtype=np.int32))
        features = pa.ListArray.from_arrays(offsets, pa.array(x.ravel()), type=FEATURES_TYPE)
        sha = [hashlib.sha256(p.encode()).hexdigest() for p in paths]
        table = pa.table([paths, labels, splits, sha, features], schema=SCHEMA)
        assert writer is not None
        writer.write_table(table, row_group_size=CHUNK_ROWS)
    if writer:
        writer.close()
    moments_path = Path(layout.moments_path(layout.batch_runs_of(str(LAKE / "features")), batch, run_id))
    moments_path.parent.mkdir(parents=True, exist_ok=True)
    moments_path.write_bytes(acc.to_bytes())
    record = {
        "job": "extract_features",
        "features": str(run_folder),
        "moments": str(moments_path),
        "featurized": photos,
        "read": photos,
        "rejected": 0,
    }
    publish_batch(LAKE / "features", batch, run_id, record)
    return batch


class ListingCounter:
    """Wraps hadoop_fs.list_names (pca.py and commits.py call it through the module) to count the
    folder listings, and their time, of each PCA step."""

    def __init__(self):
        self.original = hadoop_fs.list_names
        self.calls, self.seconds = 0, 0.0
        hadoop_fs.list_names = self

    def __call__(self, spark, uri: str) -> list[str]:
        started = time.perf_counter()
        try:
            return self.original(spark, uri)
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - started

    def take(self) -> tuple[int, float]:
        found = (self.calls, self.seconds)
        self.calls, self.seconds = 0, 0.0
        return found


class PhaseTimer:
    """Wraps the PCA step's phases (module functions that pca.run calls through their modules) to
    time each one, per step: where the time of a day goes, and whether any part grows with the lake."""

    PHASES = (  # nested: read_bytes is also in batch_moments and read_state, confusion in project_batch
        (pca, "published_changes"),
        (pca, "batch_moments"),
        (pca, "read_state"),
        (pca, "read_basis"),
        (spaces, "measure_drift"),
        (spaces, "fit_basis"),
        (pca, "project_batch"),
        (quality, "confusion"),
        (pca, "write_plots"),
        (commits, "write_commit"),
        (commits, "clean_spaces"),
        (hadoop_fs, "read_bytes"),
        (hadoop_fs, "write_bytes_atomically"),
    )

    def __init__(self):
        self.seconds: dict[str, float] = {}
        for module, name in self.PHASES:
            setattr(module, name, self.timed(name, getattr(module, name)))

    def timed(self, name: str, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    def take(self) -> dict[str, float]:
        found = {name: round(s, 2) for name, s in self.seconds.items()}
        self.seconds = {}
        return found


def vector_rows(spark, pca_uri: str) -> tuple[int, dict[str, int]]:
    """The rows of every vector folder the current space names, from their Parquet footers."""
    commit = commits.read_space(spark, pca_uri)
    assert commit is not None
    rows = {}
    for batch, uri in commit["vectors"].items():
        local = Path(uri.removeprefix("file:"))
        rows[batch] = sum(pq.read_metadata(f).num_rows for f in local.glob("*.parquet"))
    return commit["space"], rows


def tree_cpu_s() -> float:
    """CPU seconds of this process and its descendants (Spark's JVM, its Python workers), reaped
    children included: less sensitive than wall time to other work on a shared machine."""
    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            continue
    return total


def run_pca(spark, listings: ListingCounter, phases: PhaseTimer, refit: str) -> dict:
    argv = ["--features", str(LAKE / "features"), "--output", str(LAKE / "pca"), "--variance", "0.9"]
    listings.take()
    phases.take()
    started, cpu = time.perf_counter(), tree_cpu_s()
    metrics = pca.run(spark, pca.parse_args([*argv, "--refit", refit]))
    metrics["wall_s"] = round(time.perf_counter() - started, 2)
    metrics["cpu_s"] = round(tree_cpu_s() - cpu, 1)
    metrics["listings"], metrics["listing_s"] = listings.take()
    metrics["phases"] = phases.take()
    return metrics


def table_row(day, photos: str, m: dict) -> str:
    refit = f"yes: {m['refit_reason']}" if m["new_space"] else "no"
    vectors = sum(m["vectors_rows"].values())
    return (
        f"| {day} | {photos} | {m['wall_s']:.1f} s | {m['cpu_s']:.0f} s "
        f"| {m['rows_read']:,} | {m['rows_written']:,} | {refit} "
        f"| `{m['space'][-8:]}` | {vectors:,} | {m['listings']} ({m['listing_s']:.2f} s) |"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--days", type=int, default=int(os.environ.get("GROWTH_DAYS", 10)))
    p.add_argument("--photos", type=int, default=int(os.environ.get("GROWTH_PHOTOS", 20_000)))
    p.add_argument("--new-classes-day", type=int, default=int(os.environ.get("GROWTH_NEW_CLASSES_DAY", 7)))
    p.add_argument("--master", default="local[2]")
    args = p.parse_args(argv)
    if args.days < 3:
        raise SystemExit("--days: at least 3 (day 2 is the reference of the growth ratio)")

    shutil.rmtree(LAKE, ignore_errors=True)
    LAKE.mkdir(parents=True)
    spark = spark_session(
        "fruits-bench-growth",
        {
            "spark.master": args.master,
            "spark.driver.extraJavaOptions": LOCAL_DRIVER_JAVA_OPTIONS,
            "spark.sql.execution.arrow.maxRecordsPerBatch": "2048",  # as reduce_dimensions.py sets it
            "spark.ui.showConsoleProgress": "false",
        },
    )
    listings, phases = ListingCounter(), PhaseTimer()
    gen = Generator()
    pca_uri = hadoop_fs.qualify(spark, str(LAKE / "pca"))
    header = (
        "| day | photos | PCA step | CPU | rows read | rows written | refit | space | vectors in space | listings |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    print(f"{args.days} days x {args.photos:,} photos, new classes on day {args.new_classes_day}, {args.master}")
    days: list[dict] = []
    published = 0
    try:
        for day in range(1, args.days + 1):
            started = time.perf_counter()
            publish_day(gen, day, args.photos, day == args.new_classes_day)
            written_s = time.perf_counter() - started
            published += args.photos
            m = run_pca(spark, listings, phases, "auto")
            m["space_checked"], m["vectors_rows"] = vector_rows(spark, pca_uri)
            days.append({"day": day, "photos": args.photos, "published": published, "write_s": written_s, **m})
            if day == 1:
                print(header)
            print(table_row(day, f"{args.photos:,}", m), flush=True)
        forced = run_pca(spark, listings, phases, "always")
        forced["space_checked"], forced["vectors_rows"] = vector_rows(spark, pca_uri)
        print(table_row("forced refit", "0", forced), flush=True)
    finally:
        spark.stop()

    print()
    print(
        f"forced refit (--refit always) of {published:,} photos: {forced['wall_s']:.1f} s, "
        f"rows read {forced['rows_read']:,}, written {forced['rows_written']:,}, k {forced['k']}"
    )
    ok = True
    # (a) a day without a refit reads and writes its own photos, nothing else
    steady = [d for d in days if not d["new_space"]]
    a = bool(steady) and all(d["rows_read"] == d["rows_written"] == d["photos"] for d in steady)
    refits = [d["day"] for d in days if d["new_space"]]
    print(
        f"(a) days without a refit ({len(steady)}): rows read = rows written = the day's photos: "
        f"{'met' if a else 'NOT met'}; refits on days {refits}"
    )
    ok &= a
    # (b) the last day's step within 1.5x of day 2's (non-refit days, else the nearest ones)
    first = next((d for d in days[1:] if not d["new_space"]), None)
    last = next((d for d in reversed(days) if not d["new_space"]), None)
    if first is None or last is None or first is last:
        print("(b) not measurable: no two days without a refit after day 1")
        ok = False
    else:
        ratio = last["wall_s"] / first["wall_s"]
        b = ratio <= TARGET_RATIO
        note = "" if (first["day"], last["day"]) == (2, args.days) else " (days with a refit left out)"
        print(
            f"(b) day {last['day']} / day {first['day']} PCA step: {last['wall_s']:.1f} s / {first['wall_s']:.1f} s "
            f"= {ratio:.2f} (target <= {TARGET_RATIO}){note}: {'met' if b else 'NOT met'}"
        )
        cpu = last["cpu_s"] / first["cpu_s"] if first["cpu_s"] else float("nan")
        print(f"    CPU seconds (JVM, driver, workers): {last['cpu_s']:.0f} / {first['cpu_s']:.0f} = {cpu:.2f}")
        ok &= b
    # (c) the newest commit's vectors are every published photo, once
    for name, m in (("after the last day", days[-1]), ("after the forced refit", forced)):
        total = sum(m["vectors_rows"].values())
        c = total == published and m["space_checked"] == m["space"] and len(m["vectors_rows"]) == args.days
        print(
            f"(c) {name}: the newest pca commit's {len(m['vectors_rows'])} vector folders hold {total:,} rows, "
            f"published photos {published:,}: {'met' if c else 'NOT met'}"
        )
        ok &= c
    print(
        f"folder listings per step: day 2 {days[1]['listings']}, day {args.days} {days[-1]['listings']} "
        f"({days[-1]['listing_s']:.2f} s): one per batch's _commits/ and vectors/ folder, growing with the batches"
    )
    print("where a step's time goes (s): " + ", ".join(sorted(days[-1]["phases"])))
    for d in [days[1], days[-1], forced]:
        name = "forced refit" if d is forced else f"day {d['day']}"
        print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(d["phases"].items())))
    OUT.mkdir(parents=True, exist_ok=True)
    keep = (
        "day",
        "photos",
        "published",
        "write_s",
        "wall_s",
        "cpu_s",
        "seconds",
        "rows_read",
        "rows_written",
        "new_space",
    )
    results = {
        "days": args.days,
        "photos_per_day": args.photos,
        "new_classes_day": args.new_classes_day,
        "master": args.master,
        "table": [
            {
                **{key: d[key] for key in keep},
                "refit_reason": d["refit_reason"],
                "space": d["space"],
                "k": d["k"],
                "vectors": sum(d["vectors_rows"].values()),
                "listings": d["listings"],
                "listing_s": round(d["listing_s"], 3),
                "phases": d["phases"],
                "drift": d["drift"],
            }
            for d in days
        ],
        "forced_refit": {
            key: forced[key] for key in ("wall_s", "cpu_s", "seconds", "rows_read", "rows_written", "k", "phases")
        },
        "targets_met": bool(ok),
    }
    (OUT / "growth.json").write_text(json.dumps(results, indent=2))
    print(f"results: {OUT / 'growth.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
