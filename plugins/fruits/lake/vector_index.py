"""The vector index of the current embedding space: what `fruits similar` searches.

One piece per batch, beside the space, at layout.index_piece(pca/, space, batch, vectors run):

    <piece>.usearch       an HNSW graph (usearch) of the batch's vectors under cosine; key = row number
    <piece>.rows.parquet  path and label of each row number

A day adds the pieces of its batches and never rewrites another; a new space builds all of them
anew. A piece is named by the run that wrote its vectors, so one built from an older run of a
re-published batch never matches what the current space's record names: it is never searched. The rows
file is written first and the graph last: a graph present means a whole piece.

Memory is one piece's graph (memory-mapped) and one Parquet row group of vectors at a time: never
the lake's features, never float64 copies.
"""

import heapq
import io
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fruits.lake import published
from fruits.lake.storage import Storage
from fruits_jobs import commits, layout

log = logging.getLogger(__name__)

INDEX_SUFFIX = ".usearch"
ROWS_SUFFIX = ".rows.parquet"
# HNSW: 16 links per node, 128 candidates while adding, 64 while searching: recall@10 of 0.99+ on
# 200k vectors of k=100 (make bench-index); saved in the piece, so readers search as it was built.
CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 128, 64
READ_ROWS = 8192  # vectors read (and added) at a time
WHAT_TO_RUN = "run `fruits index` (or the DAG's index step after the PCA)"


class NoSpace(LookupError):
    """The lake has no embedding space yet (no vectors table)."""


class MissingPiece(LookupError):
    """A batch of the current space has no index piece for the vectors its record names."""


class Match(NamedTuple):
    similarity: float  # cosine, in the space
    path: str
    label: str | None
    batch: str


# ---- The current space and its pieces --------------------------------------------------------


def current_space(storage: Storage) -> dict:
    """The current space's record (published.current_space); NoSpace when the lake has none."""
    space = published.current_space(storage)
    if space is None:
        raise NoSpace(f"no embedding space in {storage.name} yet: run the pipeline (its PCA step makes one)")
    return space


def lake_key(storage: Storage, ref: str) -> str:
    """A record's reference (relative, or already resolved against this lake) as a key of storage."""
    return layout.refer(layout.resolve(ref, storage.name), storage.name).rstrip("/")


def vectors_run(vectors_ref: str) -> str:
    """The run that wrote a batch's vectors: the last folder of pca/spaces/<s>/vectors/<batch>/<run>."""
    return vectors_ref.rstrip("/").rsplit("/", 1)[-1]


def pieces(space_record: dict) -> dict[str, str]:
    """batch id -> the key (no suffix) of the piece its current vectors need."""
    space = space_record["space"]
    return {
        batch: layout.index_piece(layout.PCA, space, batch, vectors_run(ref))
        for batch, ref in sorted(space_record["vectors"].items())
    }


def index_listing(storage: Storage, space_record: dict) -> dict[str, int]:
    """key -> size of every file in the space's index folder: one listing."""
    return storage.sizes(f"{layout.space_folder(layout.PCA, space_record['space'])}/{layout.INDEX_DIR}/")


def present_pieces(storage: Storage, space_record: dict) -> set[str]:
    """The pieces (keys, no suffix) whose graph is in the space's index folder."""
    return {key[: -len(INDEX_SUFFIX)] for key in index_listing(storage, space_record) if key.endswith(INDEX_SUFFIX)}


def missing_batches(storage: Storage, space_record: dict) -> list[str]:
    present = present_pieces(storage, space_record)
    return [batch for batch, piece in pieces(space_record).items() if piece not in present]


# ---- Building --------------------------------------------------------------------------------


def part_keys(storage: Storage, folder_key: str) -> list[str]:
    """The Parquet files of a vectors folder, as Spark or pyarrow wrote them (not _SUCCESS, .crc)."""
    names = storage.sizes(folder_key + "/")
    return sorted(
        key for key in names if key.endswith(".parquet") and not key.rsplit("/", 1)[-1].startswith(("_", "."))
    )


def as_matrix(pca_column, k: int, where: str) -> np.ndarray:
    """A list<float> column of one record batch as an (n, k) float32 matrix, no float64 copy."""
    flat = pca_column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if len(pca_column) and flat.size != len(pca_column) * k:
        raise commits.DamagedLake(f"{where}: a vector is not {k} long; rebuild the space (pca_refit=always)")
    return flat.reshape(len(pca_column), k)


def new_graph(k: int):
    from usearch.index import Index

    return Index(
        ndim=k,
        metric="cos",
        dtype="f32",
        connectivity=CONNECTIVITY,
        expansion_add=EXPANSION_ADD,
        expansion_search=EXPANSION_SEARCH,
    )


def build_piece(storage: Storage, vectors_key: str, piece: str, k: int) -> int:
    """Index one batch's vectors folder as the piece at `piece`; the number of vectors. Reads one
    record batch at a time; S3 part files are downloaded one at a time into a temp folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    graph, paths, labels, count = new_graph(k), [], [], 0
    with tempfile.TemporaryDirectory(prefix="fruits-index-") as scratch:
        for key in part_keys(storage, vectors_key):
            local = storage.local_file(key, Path(scratch))
            for batch in pq.ParquetFile(local).iter_batches(batch_size=READ_ROWS, columns=["path", "label", "pca"]):
                vectors = as_matrix(batch.column("pca"), k, storage.name + key)
                graph.add(np.arange(count, count + len(vectors), dtype=np.uint64), vectors)
                paths.append(batch.column("path"))
                labels.append(batch.column("label"))
                count += len(vectors)
            if local.is_relative_to(scratch):
                local.unlink()  # one downloaded part at a time on disk
        rows = pa.table({"path": pa.chunked_array(paths, pa.string()), "label": pa.chunked_array(labels, pa.string())})
        sink = io.BytesIO()
        pq.write_table(rows, sink)
        storage.put_bytes(sink.getvalue(), piece + ROWS_SUFFIX)
        graph_file = Path(scratch) / ("piece" + INDEX_SUFFIX)
        graph.save(str(graph_file))
        storage.upload_file(graph_file, piece + INDEX_SUFFIX)  # last: the piece is whole
    return count


def build_missing_pieces(storage: Storage, space_record: dict) -> list[str]:
    """Build the pieces the record's vectors lack, reading only those batches' vectors; the pieces
    built (keys, no suffix). Idempotent: a second call finds them and builds nothing."""
    present = present_pieces(storage, space_record)
    built = []
    for batch, piece in pieces(space_record).items():
        if piece in present:
            continue
        count = build_piece(storage, lake_key(storage, space_record["vectors"][batch]), piece, int(space_record["k"]))
        log.info("indexed batch %s: %d vectors in %s%s%s", batch, count, storage.name, piece, INDEX_SUFFIX)
        built.append(piece)
    return built


# ---- Searching -------------------------------------------------------------------------------


def read_components(storage: Storage, space_record: dict) -> np.ndarray:
    """The space's basis (d x k): a photo's features @ it = its vector, as the PCA job projects."""
    with tempfile.TemporaryDirectory(prefix="fruits-basis-") as scratch:
        with np.load(storage.local_file(lake_key(storage, space_record["basis"]), Path(scratch))) as basis:
            return np.asarray(basis["components"])


def project(features: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Uncentred, like Spark's PCAModel (and the vectors in the lake)."""
    return (np.asarray(features, dtype=np.float64) @ components).astype(np.float32)


def require_pieces(storage: Storage, space_record: dict, batches: list[str]) -> None:
    """MissingPiece naming the first batch without its piece, and what to run."""
    missing = [b for b in missing_batches(storage, space_record) if b in batches]
    if missing:
        piece = pieces(space_record)[missing[0]]
        more = f" (and {len(missing) - 1} more batches)" if len(missing) > 1 else ""
        raise MissingPiece(
            f"batch {missing[0]}{more} has no index piece in space {space_record['space']} "
            f"({storage.name}{piece}{INDEX_SUFFIX}): {WHAT_TO_RUN}"
        )


def open_piece(path: Path, where: str):
    """A piece's graph, memory-mapped; DamagedLake naming it when the file is not one."""
    from usearch.index import Index

    try:
        graph = Index.restore(str(path), view=True)
    except ValueError as exc:  # usearch: "Not a dense USearch index!"
        graph, reason = None, str(exc)
    else:
        reason = "empty file"
    if graph is None:
        raise commits.DamagedLake(
            f"{where}{INDEX_SUFFIX} is not an index piece ({reason}); delete it and {WHAT_TO_RUN}"
        )
    return graph


def fetch(storage: Storage, key: str, scratch: Path, cache: Path | None, size: int | None) -> Path:
    """A file on this machine holding the object at key. Without a cache: storage.local_file (a folder
    lake's own file, or a download into scratch). With one (an S3 lake): the copy kept there when it
    has the listed size (a piece is never rewritten under its name), else a download, then kept."""
    if cache is None:
        return storage.local_file(key, scratch)
    kept = cache / key
    if kept.is_file() and kept.stat().st_size == size:
        return kept
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as partial:
        fetched = storage.local_file(key, Path(partial))
        if not fetched.is_relative_to(partial):  # a folder lake's own file: nothing to keep
            return fetched
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched, kept)  # a rename within the cache: a kept file is always whole
    return kept


def prune_cache(cache: Path, keep: set[str]) -> list[str]:
    """Forget the cached files the current commit no longer names (an older space, the older run of a
    re-published batch): the cache holds at most the current index. The keys forgotten."""
    gone = []
    for path in sorted((cache / layout.PCA).rglob("*")):
        key = path.relative_to(cache).as_posix()
        if path.is_file() and key not in keep:
            path.unlink()
            gone.append(key)
    return gone


def search_piece(get: Callable[[str, Path], Path], where: str, piece: str, batch: str, query, k: int) -> list[Match]:
    """The k nearest of one piece, by cosine. get(key, scratch): a file on this machine holding key."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="fruits-search-") as scratch:
        graph = open_piece(get(piece + INDEX_SUFFIX, Path(scratch)), where + piece)
        found = graph.search(query, k) if len(graph) else None
        if found is None or not len(found.keys):
            return []
        keys = np.asarray(found.keys, dtype=np.int64)
        rows = pq.read_table(get(piece + ROWS_SUFFIX, Path(scratch)), columns=["path", "label"])
        picked = rows.take(keys).to_pylist()
        del graph  # the memory map closes before its temp folder goes
    return [
        Match(1.0 - float(distance), row["path"], row["label"], batch)
        for distance, row in zip(found.distances, picked, strict=True)
    ]


def search(
    storage: Storage,
    space_record: dict,
    query_vector: np.ndarray,
    k: int,
    batches: list[str] | None = None,
    cache: Path | None = None,
) -> list[Match]:
    """The k vectors of the space nearest to query_vector (already in the space), best first: the
    top k of each piece (every batch, or only `batches`), merged. MissingPiece before any search
    when a batch's piece is not built. cache: a folder keeping downloaded pieces between searches
    (an S3 lake; None downloads each piece for each search)."""
    wanted = sorted(space_record["vectors"]) if batches is None else sorted(batches)
    require_pieces(storage, space_record, wanted)
    listing = index_listing(storage, space_record)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        current = {p + suffix for p in pieces(space_record).values() for suffix in (INDEX_SUFFIX, ROWS_SUFFIX)}
        prune_cache(cache, current)

    def get(key: str, scratch: Path) -> Path:
        return fetch(storage, key, scratch, cache, listing.get(key))

    query = np.asarray(query_vector, dtype=np.float32)
    found: list[Match] = []
    for batch in wanted:
        found += search_piece(get, storage.name, pieces(space_record)[batch], batch, query, k)
        found = heapq.nlargest(k, found, key=lambda m: m.similarity)
    return found
