"""`make bench-index`: the vector index behind `fruits similar`, usearch against faiss-cpu, side by side.

    python bench/bench_index.py [--rows 200000] [--dim 100] [--queries 500] [--threads 1]

Synthetic PCA vectors shaped like the lake's: N rows of `dim` float32 values drawn around 300
cluster centres with a decaying spectrum (classes of fruit; a uniform cloud would make every
neighbour equally near), and held-out queries from the same clusters. Both libraries build the
same graph (HNSW, M=16 links, 128 candidates while adding, 64 while searching) under cosine, on
the same threads. Per library: build time, the file size, the time to open the saved file
(memory-mapped, as `fruits similar` opens a piece), the median time of one top-10 query, and
recall@10 against an exact brute-force scan. Prints one table; nothing is written but a temp folder.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

K = 10
M, EF_ADD, EF_SEARCH = 16, 128, 64


def synthetic(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(np.arange(1, dim + 1))  # a PCA's spectrum: the first axes carry the most
    centres = rng.normal(size=(300, dim)) * scale * 3
    return (centres[rng.integers(0, 300, rows)] + rng.normal(size=(rows, dim)) * scale).astype(np.float32)


def exact_top(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.stack([np.argsort(-(unit @ one))[:K] for one in q])


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def usearch_side(data, queries, folder: Path, threads: int) -> dict:
    from usearch.index import Index

    started = time.perf_counter()
    index = Index(ndim=data.shape[1], metric="cos", dtype="f32", connectivity=M, expansion_add=EF_ADD)
    index.expansion_search = EF_SEARCH
    index.add(np.arange(len(data), dtype=np.uint64), data, threads=threads)
    built = time.perf_counter() - started
    path = folder / "piece.usearch"
    index.save(str(path))
    started = time.perf_counter()
    opened = Index.restore(str(path), view=True)
    opened.expansion_search = EF_SEARCH
    loaded = time.perf_counter() - started
    times, found = [], []
    for q in queries:
        started = time.perf_counter()
        keys = opened.search(q, K).keys
        times.append(time.perf_counter() - started)
        found.append(keys)
    return {"build": built, "size": path.stat().st_size, "load": loaded, "times": times, "found": np.stack(found)}


def faiss_side(data, queries, folder: Path, threads: int) -> dict:
    import faiss

    faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    index = faiss.IndexHNSWFlat(data.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_ADD
    unit = np.ascontiguousarray(data / np.linalg.norm(data, axis=1, keepdims=True))  # cosine = IP of unit vectors
    index.add(unit)
    built = time.perf_counter() - started
    path = folder / "piece.faiss"
    faiss.write_index(index, str(path))
    started = time.perf_counter()
    opened = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    opened.hnsw.efSearch = EF_SEARCH
    loaded = time.perf_counter() - started
    times, found = [], []
    for q in queries:
        started = time.perf_counter()
        _, keys = opened.search((q / np.linalg.norm(q))[None], K)
        times.append(time.perf_counter() - started)
        found.append(keys[0])
    return {"build": built, "size": path.stat().st_size, "load": loaded, "times": times, "found": np.stack(found)}


def table(results: dict[str, dict], truth: np.ndarray, rows: int, dim: int) -> list[str]:
    lines = [
        f"{rows:,} vectors of {dim} float32, HNSW M={M} ef_add={EF_ADD} ef_search={EF_SEARCH}, cosine",
        f"{'library':<10} {'build s':>8} {'file MB':>8} {'open ms':>8} {'query ms':>9} {'recall@10':>10}",
    ]
    for name, r in results.items():
        lines.append(
            f"{name:<10} {r['build']:>8.1f} {r['size'] / 1e6:>8.1f} {r['load'] * 1e3:>8.1f} "
            f"{statistics.median(r['times']) * 1e3:>9.3f} {recall(r['found'], truth):>10.3f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    both = synthetic(args.rows + args.queries, args.dim)
    data, queries = both[: args.rows], both[args.rows :]
    truth = exact_top(data, queries)
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "usearch": usearch_side(data, queries, Path(tmp), args.threads),
            "faiss-cpu": faiss_side(data, queries, Path(tmp), args.threads),
        }
    print("\n".join(table(results, truth, args.rows, args.dim)))


if __name__ == "__main__":
    main()
