"""`make bench-batches`: a year and more of daily batches, and what `fruits similar` pays as they pile up.

    python bench/batches.py [--batches 1000] [--photos 300] [--dim 100] [--queries 50]

Builds a lake (a temp folder) of synthetic daily batches, each `--photos` vectors of `--dim` float32
drawn around 300 cluster centres (classes of fruit), written as the PCA job writes a batch's vectors,
and after each day runs the DAG's index step (vector_index.build_missing_pieces: the tiered pieces).
At 10, 100 and 1,000 batches it times `fruits similar`'s search in-process (vector_index.search: the
catalog read, then each piece searched), p50 and p95 over `--queries` held-out queries with the
pieces open and kept (`opened`), and p50 with each piece opened anew (memory-mapped, as the CLI
does once per call); counts the files one search opens, and times the same queries over one piece
per batch (the layout before issue 29: each opened, searched, its rows read), built beside it.
Also printed: the pieces, the largest piece the tiers made, and the index step's seconds (the
day's, and the largest so far: a merge). Not measured yet: ingest's held-photo read and the daily
step's requests (issue 29 points 2-3). Nothing is written but the temp folder.
"""

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path[:0] = [
    str(Path(__file__).resolve().parents[1] / "plugins"),
    str(Path(__file__).resolve().parents[1] / "spark_jobs"),
]

from fruits.lake import vector_index  # noqa: E402
from fruits.lake.storage import LocalStorage  # noqa: E402
from fruits_jobs import layout  # noqa: E402

SPACE = "20260101T000000000Z-0000beef"
CHECKPOINTS = (10, 100, 1000)
K = 10
TARGET_RATIO, TARGET_MS = 2.0, 200.0  # p50 at 1,000 batches against 10; and under this


def synthetic(rows: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(np.arange(1, dim + 1))  # a PCA's spectrum: the first axes carry the most
    centres = np.random.default_rng(0).normal(size=(300, dim)) * scale * 3
    return (centres[rng.integers(0, 300, rows)] + rng.normal(size=(rows, dim)) * scale).astype(np.float32)


def run_id(day: int) -> str:
    return f"2026{day:08d}T000000000Z-0000beef"


def put_batch(storage: LocalStorage, batch: str, run: str, vectors: np.ndarray) -> str:
    """The batch's vectors folder, as the PCA job writes it; its key."""
    folder = layout.vectors_folder(layout.PCA, SPACE, batch, run)
    n, dim = vectors.shape
    table = pa.table(
        {
            "path": pa.array([f"raw/batch_id={batch}/Training/C{i % 300}/{i}.jpg" for i in range(n)]),
            "label": pa.array([f"C{i % 300}" for i in range(n)]),
            "pca": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim).cast(pa.list_(pa.float32())),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.put_bytes(sink.getvalue(), f"{folder}/part-00000.snappy.parquet")
    return folder


def per_batch_search(folder: Path, batches: list[str], query: np.ndarray) -> None:
    """The search before issue 29: every batch's own piece opened, searched, its rows read."""
    from usearch.index import Index

    found = []
    for batch in batches:
        graph = Index.restore(str(folder / f"{batch}.usearch"), view=True)
        hits = graph.search(query, K)
        rows = pq.read_table(folder / f"{batch}.rows.parquet", columns=["path"]).take(np.asarray(hits.keys, np.int64))
        found += list(zip(1.0 - np.asarray(hits.distances), rows.column("path").to_pylist(), strict=True))
        found = sorted(found, reverse=True)[:K]
        del graph


def per_batch_piece(folder: Path, batch: str, vectors: np.ndarray) -> None:
    graph = vector_index.new_graph(vectors.shape[1])
    graph.add(np.arange(len(vectors), dtype=np.uint64), vectors)
    graph.save(str(folder / f"{batch}.usearch"))
    pq.write_table(
        pa.table({"path": [f"{batch}/{i}.jpg" for i in range(len(vectors))]}), folder / f"{batch}.rows.parquet"
    )


def percentiles(times: list[float]) -> tuple[float, float]:
    ms = sorted(t * 1e3 for t in times)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    queries = synthetic(args.queries, args.dim, seed=10**6)
    rows, day_s, worst_s = [], 0.0, 0.0
    with tempfile.TemporaryDirectory(prefix="fruits-bench-batches-") as tmp:
        storage, before = LocalStorage(Path(tmp) / "lake"), Path(tmp) / "per-batch"
        before.mkdir()
        record: dict = {"space": SPACE, "k": args.dim, "vectors": {}}
        for day in range(1, args.batches + 1):
            batch, vectors = f"d{day:04d}", synthetic(args.photos, args.dim, seed=day)
            record["vectors"][batch] = put_batch(storage, batch, run_id(day), vectors)
            record["run"] = run_id(day)  # the PCA run that published the day (a space record names it)
            started = time.perf_counter()
            vector_index.build_missing_pieces(storage, record)
            day_s = time.perf_counter() - started
            worst_s = max(worst_s, day_s)
            per_batch_piece(before, batch, vectors)
            if day not in CHECKPOINTS and day != args.batches:
                continue
            catalog = vector_index.read_catalog(storage, record)
            times, cold_times, old_times, opened = [], [], [], vector_index.OpenIndex()
            vector_index.search(storage, record, queries[0], K, opened=opened)  # opens the pieces once
            for query in queries:
                started = time.perf_counter()
                vector_index.search(storage, record, query, K, opened=opened)
                times.append(time.perf_counter() - started)
            for query in queries[: max(5, args.queries // 5)]:  # as the CLI does: the pieces opened anew
                started = time.perf_counter()
                vector_index.search(storage, record, query, K)
                cold_times.append(time.perf_counter() - started)
            for query in queries[: max(5, args.queries // 5)]:
                started = time.perf_counter()
                per_batch_search(before, sorted(record["vectors"]), query)
                old_times.append(time.perf_counter() - started)
            largest = max(catalog["pieces"], key=lambda p: len(p["members"]))
            rows.append(
                {
                    "batches": day,
                    "pieces": len(catalog["pieces"]),
                    "largest": (len(largest["members"]), sum(n for _, n in largest["rows"].values())),
                    "p50_p95": percentiles(times),
                    "cold_p50": percentiles(cold_times)[0],
                    "files": 1 + 2 * len(catalog["pieces"]),
                    "old_p50": percentiles(old_times)[0],
                    "old_files": 2 * day,
                    "day_s": day_s,
                    "worst_s": worst_s,
                }
            )
            print(f"... {day} batches", file=sys.stderr)
    print(f"{args.photos} vectors of {args.dim} float32 a batch; top {K}; in-process search (catalog, pieces mapped)")
    print(
        f"{'batches':>8} {'pieces':>7} {'largest piece':>20} {'p50 ms':>8} {'p95 ms':>8} {'opening p50':>12}"
        f" {'files':>6}"
        f" {'before: p50 ms':>15} {'files':>6} {'index step s':>13} {'its worst s':>12}"
    )
    for r in rows:
        largest = f"{r['largest'][0]} b, {r['largest'][1]:,} v"
        print(
            f"{r['batches']:>8} {r['pieces']:>7} {largest:>20} {r['p50_p95'][0]:>8.2f} {r['p50_p95'][1]:>8.2f}"
            f" {r['cold_p50']:>12.2f} {r['files']:>6} {r['old_p50']:>15.2f} {r['old_files']:>6}"
            f" {r['day_s']:>13.2f} {r['worst_s']:>12.2f}"
        )
    first, last = rows[0]["p50_p95"][0], rows[-1]["p50_p95"][0]
    ratio = last / first
    verdict = "meets" if ratio <= TARGET_RATIO and last < TARGET_MS else "MISSES"
    print(
        f"p50 at {rows[-1]['batches']} batches / at {rows[0]['batches']} = {ratio:.2f} "
        f"(target <= {TARGET_RATIO:g}, and under {TARGET_MS:g} ms: {verdict})"
    )


if __name__ == "__main__":
    main()
