"""`make bench-batches`: a year and more of daily batches, and what a day and a query pay as they pile up.

    python bench/batches.py [--batches 1000] [--photos 300] [--dim 100] [--queries 50]

Builds a lake (a temp folder) of synthetic daily batches, each `--photos` photos: their sha256 (random)
and vectors of `--dim` float32 drawn around 300 cluster centres (classes of fruit), written as the
PCA job writes a batch's vectors. Each day runs what the DAG does with them: ingest's held-photo read
(ingest.held_catalog, held_index.lookup of a landing folder of the day's photos and a tenth of
yesterday's) and record (held_index.record: the batch's file, the tiered pieces), then the index
step (vector_index.build_missing_pieces: the tiered pieces). At 10, 100 and 1,000 batches:
  - `fruits similar`'s search in-process (vector_index.search: the catalog, then each piece
    searched), p50 and p95 over `--queries` held-out queries with the pieces open and kept (OpenIndex,
    trusting its catalog for a second, as a server would), p50 with the catalog's fingerprint asked
    at every search, and p50 with each piece opened anew (memory-mapped, as the CLI does once per call); the files one
    search opens; the same queries over one piece per batch (the layout before issue 29);
  - ingest's held-photo read: the files it reads and its seconds, and the same read over one file
    per batch (before issue 29);
  - the daily step's requests to the lake (both index steps, through Storage: listings, reads,
    writes, deletes): the checkpoint day's, and the median and worst of the days since the last
    checkpoint (a merge day reads and writes more). delta-rs's reads of the tables' logs are not in
    them (a checkpoint and the entries since, not one per batch).
Also printed: the pieces, the largest piece the tiers made, and the index step's seconds (the day's,
and the largest so far: a merge). Nothing is written but the temp folder.
"""

import argparse
import functools
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

from fruits.lake import held_index, ingest, vector_index  # noqa: E402
from fruits.lake.storage import LocalStorage  # noqa: E402
from fruits_jobs import layout  # noqa: E402

SPACE = "20260101T000000000Z-0000beef"
CHECKPOINTS = (10, 100, 1000)
K = 10
TARGET_RATIO, TARGET_MS = 2.0, 200.0  # p50 at 1,000 batches against 10; and under this
TARGET_HELD_FILES = 11  # ingest's held-photo read at 1,000 batches
REFRESH_S = 1.0  # how long a long-lived reader trusts the catalog it read (OpenIndex)


class CountingStorage(LocalStorage):
    """A folder lake counting the requests made to it (each call: one request to S3, a listing being
    one per 1,000 keys)."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.requests, self.files_read = 0, []

    def sizes(self, prefix: str) -> dict[str, int]:
        found = super().sizes(prefix)
        self.requests += 1 + len(found) // 1000
        return found

    def fingerprints(self, prefix: str):
        found = super().fingerprints(prefix)
        self.requests += 1 + len(found) // 1000
        return found

    def read_bytes(self, key: str) -> bytes:
        self.requests += 1
        self.files_read.append(key)
        return super().read_bytes(key)

    def local_file(self, key: str, scratch: Path) -> Path:
        self.requests += 1
        self.files_read.append(key)
        return super().local_file(key, scratch)

    def put_bytes(self, data: bytes, key: str) -> None:
        self.requests += 1
        super().put_bytes(data, key)

    def upload_file(self, path: Path, key: str) -> None:
        self.requests += 1
        super().upload_file(path, key)

    def delete(self, keys: list[str]) -> None:
        self.requests += len(keys)
        super().delete(keys)


def photo_hashes(rows: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed + 7_000_000)
    return [bytes(row).hex() for row in rng.integers(0, 256, size=(rows, 32), dtype=np.uint8)]


def held_read(storage: CountingStorage, landing: set[str]) -> tuple[dict, int, float, dict]:
    """Ingest's held-photo read of a landing folder's hashes: the catalog, its answer, files, seconds."""
    storage.files_read.clear()
    started = time.perf_counter()
    catalog = ingest.held_catalog(storage, {})
    found = held_index.lookup(storage, catalog, landing)
    return catalog, len(storage.files_read), time.perf_counter() - started, found


def held_read_before(storage: LocalStorage, batches: list[str], landing: set[str]) -> tuple[float, int]:
    """The read before issue 29: every batch's own held-photo file, filtered by the landing folder."""
    started = time.perf_counter()
    wanted, found = held_index.wanted(landing), 0
    for batch in batches:
        found += len(held_index.hashes(storage.read_bytes(layout.held_index_key(batch)), wanted))
    return time.perf_counter() - started, found


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
    requests: list[int] = []  # each day's, since the last checkpoint
    yesterday: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fruits-bench-batches-") as tmp:
        storage, before = CountingStorage(Path(tmp) / "lake"), Path(tmp) / "per-batch"
        before.mkdir()
        record: dict = {"space": SPACE, "k": args.dim, "vectors": {}}
        for day in range(1, args.batches + 1):
            batch, vectors = f"d{day:04d}", synthetic(args.photos, args.dim, seed=day)
            record["vectors"][batch] = put_batch(storage, batch, run_id(day), vectors)  # the PCA job's
            record["run"] = run_id(day)  # the PCA run that published the day (a space record names it)
            hashes = photo_hashes(args.photos, day)
            again = yesterday[: len(yesterday) // 10]  # photos left in the landing folder since yesterday
            storage.requests = 0
            catalog, held_files, held_s, found = held_read(storage, set(hashes) | set(again))
            if sorted(found) != sorted(again):
                raise AssertionError(f"day {day}: the held-photo index found {len(found)} photos, not {len(again)}")
            held_index.record(storage, catalog, batch, hashes, functools.partial(ingest.batch_hashes, storage))
            started = time.perf_counter()
            vector_index.build_missing_pieces(storage, record)
            day_s = time.perf_counter() - started
            worst_s = max(worst_s, day_s)
            requests.append(storage.requests)
            yesterday = hashes
            per_batch_piece(before, batch, vectors)
            if day not in CHECKPOINTS and day != args.batches:
                continue
            held_before_s, _ = held_read_before(storage, sorted(record["vectors"])[:-1], set(hashes) | set(again))
            catalog = vector_index.read_catalog(storage, record)
            times, checked_times, cold_times, old_times = [], [], [], []
            opened, checked = vector_index.OpenIndex(refresh_s=REFRESH_S), vector_index.OpenIndex()
            for index, timed in ((opened, times), (checked, checked_times)):
                vector_index.search(storage, record, queries[0], K, opened=index)  # opens the pieces once
                for query in queries:
                    started = time.perf_counter()
                    vector_index.search(storage, record, query, K, opened=index)
                    timed.append(time.perf_counter() - started)
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
                    "checked_p50": percentiles(checked_times)[0],
                    "cold_p50": percentiles(cold_times)[0],
                    "files": 1 + 2 * len(catalog["pieces"]),
                    "old_p50": percentiles(old_times)[0],
                    "old_files": 2 * day,
                    "day_s": day_s,
                    "worst_s": worst_s,
                    "held": (held_files, held_s * 1e3, day - 1, held_before_s * 1e3),
                    "requests": (requests[-1], statistics.median(requests), max(requests)),
                }
            )
            requests = []
            print(f"... {day} batches", file=sys.stderr)
    print(
        f"{args.photos} vectors of {args.dim} float32 a batch; top {K}; in-process search, pieces mapped and kept"
        f" (OpenIndex, its catalog re-checked every {REFRESH_S:g} s; 'checked': at every search)"
    )
    print(
        f"{'batches':>8} {'pieces':>7} {'largest piece':>20} {'p50 ms':>8} {'p95 ms':>8} {'checked p50':>12}"
        f" {'opening p50':>12} {'files':>6}"
        f" {'before: p50 ms':>15} {'files':>6} {'index step s':>13} {'its worst s':>12}"
    )
    for r in rows:
        largest = f"{r['largest'][0]} b, {r['largest'][1]:,} v"
        print(
            f"{r['batches']:>8} {r['pieces']:>7} {largest:>20} {r['p50_p95'][0]:>8.2f} {r['p50_p95'][1]:>8.2f}"
            f" {r['checked_p50']:>12.2f} {r['cold_p50']:>12.2f} {r['files']:>6}"
            f" {r['old_p50']:>15.2f} {r['old_files']:>6} {r['day_s']:>13.2f} {r['worst_s']:>12.2f}"
        )
    print()
    print("ingest's held-photo read (a landing folder of the day's photos and a tenth of yesterday's);")
    print("the daily step's requests (both index steps, through the lake's storage)")
    print(
        f"{'batches':>8} {'held files':>11} {'held ms':>8} {'before: files':>14} {'ms':>8}"
        f" {'requests: day':>14} {'median':>7} {'worst':>6}"
    )
    for r in rows:
        files, ms, old_files, old_ms = r["held"]
        day_req, median_req, worst_req = r["requests"]
        print(
            f"{r['batches']:>8} {files:>11} {ms:>8.1f} {old_files:>14} {old_ms:>8.1f}"
            f" {day_req:>14} {median_req:>7.0f} {worst_req:>6}"
        )
    held_files = rows[-1]["held"][0]
    print(
        f"held-photo files at {rows[-1]['batches']} batches: {held_files} "
        f"(target <= {TARGET_HELD_FILES}: {'meets' if held_files <= TARGET_HELD_FILES else 'MISSES'})"
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
