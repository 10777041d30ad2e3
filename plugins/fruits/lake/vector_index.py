"""The vector index of the current embedding space: what `fruits similar` searches.

Pieces beside the space, in its index folder, each covering some of its batches (one vectors run
each), merged in tiers so that a year of daily batches stays a handful of files:

    catalog.json                 the current pieces: their members (batch -> vectors run) and rows
    pieces/<digest>.usearch      an HNSW graph (usearch) of the members' vectors under cosine; key = row
    pieces/<digest>.rows.parquet path, label and batch of each row

**The merge rule** (tiers.plan, shared with the held-photo index): a piece's tier is
floor(log2(its batches)); a day's new batches form one piece; while two pieces share a tier they
become one. So a space of n batches has at most floor(log2 n) + 1 pieces; the largest holds
2^floor(log2 n) batches. A piece holding a batch the space no longer names with that run
(re-published, or withdrawn) is rebuilt from its still-current members, so a stale row is never
returned. A new space starts with one piece of all its batches. A piece is named by the digest of
its members, so building it twice writes the same files.

**One switch.** New pieces are written first (rows, then graph), then the catalog, which readers
read first; pieces it no longer names are deleted at the next switch, so a search that read the
previous catalog still finds its files. Memory is one piece's graph (memory-mapped) and one Parquet
row group of vectors at a time: never the lake's features, never float64 copies.
"""

import contextlib
import heapq
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fruits.lake import published, tiers
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

CATALOG = "catalog.json"
PIECES_DIR = "pieces"


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


def members_of(space_record: dict) -> dict[str, str]:
    """batch id -> the vectors run the space names for it: what the index must hold, exactly."""
    return {batch: vectors_run(ref) for batch, ref in sorted(space_record["vectors"].items())}


def index_folder(space_record: dict) -> str:
    return f"{layout.space_folder(layout.PCA, space_record['space'])}/{layout.INDEX_DIR}"


def catalog_key(space_record: dict) -> str:
    return f"{index_folder(space_record)}/{CATALOG}"


def piece_key(space_record: dict, members: dict[str, str]) -> str:
    """A piece's key (no suffix): named by its members, so the same members are the same files."""
    return f"{index_folder(space_record)}/{PIECES_DIR}/{tiers.digest(members)}"


def read_catalog(storage: Storage, space_record: dict) -> dict:
    """The space's index catalog ({"pieces": []} before its first build)."""
    catalog = tiers.read_catalog(
        storage,
        catalog_key(space_record),
        {"key", "members", "rows"},
        "an index catalog",
        f"delete it and {WHAT_TO_RUN}",
    )
    return catalog or {"pieces": []}


def missing_batches(catalog: dict, space_record: dict) -> list[str]:
    """The space's batches that no piece of the catalog holds with the run the space names."""
    held = {(b, r) for piece in catalog["pieces"] for b, r in piece["members"].items()}
    return [b for b, r in members_of(space_record).items() if (b, r) not in held]


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


def build_piece(
    storage: Storage, vectors_keys: dict[str, str], piece: str, k: int, whole: list[dict] | None = None
) -> dict[str, list[int]]:
    """Index as the piece at `piece`: first the pieces in `whole` (catalog entries a merge takes as
    they are: their vectors from their graphs, which keep each one exactly, and their rows), then the
    vectors folders {batch: key}, batch after batch; each batch's rows ([first row, count]). Reads one
    record batch at a time; S3 files are downloaded one at a time into a temp folder. A merge so reads
    two pieces, not its members' folders: its requests do not grow with the batches it holds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, list] = {"path": [], "label": [], "batch": []}
    graph, rows, count = new_graph(k), {}, 0
    with tempfile.TemporaryDirectory(prefix="fruits-index-") as scratch:
        for old in whole or []:
            graph_file = storage.local_file(old["key"] + INDEX_SUFFIX, Path(scratch))
            rows_file = storage.local_file(old["key"] + ROWS_SUFFIX, Path(scratch))
            source = open_piece(graph_file, storage.name + old["key"])
            table = pq.read_table(rows_file, columns=["path", "label", "batch"])
            for start in range(0, len(table), READ_ROWS):
                keys = np.arange(start, min(start + READ_ROWS, len(table)), dtype=np.uint64)
                vectors = np.asarray(source.get(keys, dtype=np.float32), dtype=np.float32).reshape(len(keys), k)
                graph.add(keys + np.uint64(count), vectors)
            for name in columns:
                columns[name].extend(table.column(name).chunks)
            rows.update({b: [first + count, n] for b, (first, n) in old["rows"].items()})
            count += len(table)
            del source
            for local in (graph_file, rows_file):
                if local.is_relative_to(scratch):
                    local.unlink()
        for batch, vectors_key in sorted(vectors_keys.items()):
            first = count
            for key in part_keys(storage, vectors_key):
                local = storage.local_file(key, Path(scratch))
                for part in pq.ParquetFile(local).iter_batches(batch_size=READ_ROWS, columns=["path", "label", "pca"]):
                    vectors = as_matrix(part.column("pca"), k, storage.name + key)
                    graph.add(np.arange(count, count + len(vectors), dtype=np.uint64), vectors)
                    columns["path"].append(part.column("path"))
                    columns["label"].append(part.column("label"))
                    columns["batch"].append(pa.array([batch] * len(vectors), pa.string()))
                    count += len(vectors)
                if local.is_relative_to(scratch):
                    local.unlink()  # one downloaded part at a time on disk
            rows[batch] = [first, count - first]
        table = pa.table({name: pa.chunked_array(chunks, pa.string()) for name, chunks in columns.items()})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        storage.put_bytes(sink.getvalue(), piece + ROWS_SUFFIX)
        graph_file = Path(scratch) / ("piece" + INDEX_SUFFIX)
        graph.save(str(graph_file))
        storage.upload_file(graph_file, piece + INDEX_SUFFIX)  # last: the piece is whole
    return rows


def build_missing_pieces(storage: Storage, space_record: dict) -> list[str]:
    """Bring the space's index to what tiers.plan plans for its batches: build the pieces it lacks
    (reading only their members' vectors), switch the catalog to them in one write, delete what
    neither this catalog nor the previous one names. The pieces built (keys, no suffix).
    Idempotent: a second call finds the catalog current and builds nothing."""
    if not space_record:
        return []
    wanted, folder, catalog_file = members_of(space_record), index_folder(space_record), catalog_key(space_record)
    catalog = read_catalog(storage, space_record)
    have = {piece["key"]: piece for piece in catalog["pieces"]}
    planned = tiers.plan([piece["members"] for piece in catalog["pieces"]], wanted)
    pieces: list[dict] = []
    built: list[str] = []
    for members in planned:
        key = piece_key(space_record, members)
        if key not in have:
            whole = tiers.composed_of(members, catalog["pieces"])
            taken = {b for piece in whole for b in piece["members"]}
            refs = {b: lake_key(storage, space_record["vectors"][b]) for b in members if b not in taken}
            rows = build_piece(storage, refs, key, int(space_record["k"]), whole)
            log.info(
                "indexed %d batch(es), %d vectors, in %s%s%s",
                len(members),
                sum(n for _, n in rows.values()),
                storage.name,
                key,
                INDEX_SUFFIX,
            )
            have[key] = {"key": key, "members": members, "rows": rows}
            built.append(key)
        pieces.append(have[key])
    if not built and len(pieces) == len(catalog["pieces"]):
        return []
    keep = {p["key"] for p in pieces} | {p["key"] for p in catalog["pieces"]}  # the previous switch's too
    new_catalog = {"space": space_record["space"], "pieces": sorted(pieces, key=lambda p: p["key"])}
    storage.put_bytes(json.dumps(new_catalog, indent=1).encode(), catalog_file)  # the switch
    stale = [
        key
        for key in storage.sizes(folder + "/")
        if key != catalog_file and key.removesuffix(INDEX_SUFFIX).removesuffix(ROWS_SUFFIX) not in keep
    ]
    storage.delete(stale)
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


def require_pieces(storage: Storage, space_record: dict, batches: list[str]) -> dict:
    """The catalog, when its pieces hold every batch of `batches` as the space names it; else
    MissingPiece naming the first batch without its piece, and what to run."""
    return check_covered(storage, space_record, read_catalog(storage, space_record), batches)


def check_covered(storage: Storage, space_record: dict, catalog: dict, batches: list[str]) -> dict:
    """catalog, when its pieces hold every batch of `batches` as the space names it (require_pieces)."""
    wanted = set(batches)
    missing = [b for b in missing_batches(catalog, space_record) if b in wanted]
    if missing:
        more = f" (and {len(missing) - 1} more batches)" if len(missing) > 1 else ""
        raise MissingPiece(
            f"batch {missing[0]}{more} has no index piece in space {space_record['space']} "
            f"({storage.name}{catalog_key(space_record)}): {WHAT_TO_RUN}"
        )
    return catalog


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


def fetch(storage: Storage, key: str, scratch: Path, cache: Path | None) -> Path:
    """A file on this machine holding the object at key. Without a cache: storage.local_file (a folder
    lake's own file, or a download into scratch). With one (an S3 lake): the copy kept there (a piece
    is named by its members and never rewritten, and a kept file is whole: renamed in once
    downloaded), else a download, then kept."""
    if cache is None:
        return storage.local_file(key, scratch)
    kept = cache / key
    if kept.is_file():
        return kept
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as partial:
        fetched = storage.local_file(key, Path(partial))
        if not fetched.is_relative_to(partial):  # a folder lake's own file: nothing to keep
            return fetched
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched, kept)  # a rename within the cache: a kept file is always whole
    return kept


def prune_cache(cache: Path, keep: set[str]) -> list[str]:
    """Forget the cached files the current catalog no longer names (an older space, merged pieces):
    the cache holds at most the current index. The keys forgotten."""
    gone = []
    for path in sorted((cache / layout.PCA).rglob("*")):
        key = path.relative_to(cache).as_posix()
        if path.is_file() and key not in keep:
            path.unlink()
            gone.append(key)
    return gone


class OpenPiece(NamedTuple):
    graph: object  # usearch Index, memory-mapped
    rows: object  # pyarrow Table: path, label, batch of each row


def open_files(get: Callable[[str, Path], Path], where: str, key: str, scratch: Path) -> tuple[OpenPiece, bool]:
    """A piece opened from the files get() gives; and whether they outlive scratch (a folder lake's
    own files, or an S3 lake's kept copies), so the open piece may be kept for later searches."""
    import pyarrow.parquet as pq

    graph_file, rows_file = get(key + INDEX_SUFFIX, scratch), get(key + ROWS_SUFFIX, scratch)
    rows = pq.read_table(rows_file, columns=["path", "label", "batch"]).combine_chunks()  # one chunk: a quick take
    piece = OpenPiece(open_piece(graph_file, where + key), rows)
    return piece, not graph_file.is_relative_to(scratch)


def search_open(opened: OpenPiece, piece: dict, wanted: set[str] | None, query, k: int) -> list[Match]:
    """The k nearest of one open piece's rows of the `wanted` batches (None: all), by cosine. Every
    member wanted: the graph's search. Some: an exact scan of their rows (the graph keeps each vector;
    a batch's rows are one range)."""
    graph = opened.graph
    if not len(graph):  # type: ignore[arg-type]
        return []
    if wanted is None or set(piece["members"]) <= wanted:
        found = graph.search(query, k)  # type: ignore[attr-defined]
        keys, similarities = np.asarray(found.keys, dtype=np.int64), 1.0 - np.asarray(found.distances)
    else:
        ranges = [piece["rows"][b] for b in sorted(wanted & set(piece["members"]))]
        spans = [np.arange(first, first + n, dtype=np.int64) for first, n in ranges]
        keys = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        if not len(keys):
            return []
        vectors = np.stack(graph.get(keys.astype(np.uint64), dtype=np.float32)).astype(np.float64)  # type: ignore[attr-defined]
        cosine = vectors @ query / np.maximum(np.linalg.norm(vectors, axis=1) * np.linalg.norm(query), 1e-30)
        best = np.argsort(-cosine)[:k]
        keys, similarities = keys[best], cosine[best]
    picked = opened.rows.take(keys).to_pylist()  # type: ignore[attr-defined]
    return [
        Match(float(similarity), row["path"], row["label"], row["batch"])
        for similarity, row in zip(similarities, picked, strict=True)
    ]


class OpenIndex:
    """What a long-lived reader keeps between searches (the CLI makes one per call): the pieces open,
    the catalog they came from with its fingerprint, and which (space run, batches) it was found to
    cover. A changed catalog is read again, and the pieces it no longer names are let go. refresh_s:
    how long a catalog is trusted before its fingerprint is asked again (0: at every search; on S3 the
    ask is a listing, a round trip: a server may take a second or more, as search engines refresh)."""

    def __init__(self, refresh_s: float = 0.0):
        self.pieces: dict[str, OpenPiece] = {}
        self.fingerprint: tuple | None = None
        self.catalog: dict = {"pieces": []}
        self.covers: set[tuple] = set()
        self.refresh_s, self.checked_at = refresh_s, float("-inf")

    def current_catalog(self, storage: Storage, space_record: dict, batches: list[str] | None) -> dict:
        key = catalog_key(space_record)
        if self.fingerprint is None or time.monotonic() - self.checked_at >= self.refresh_s:
            fingerprint = storage.fingerprints(key).get(key)  # a listing: size and MD5 (S3: its ETag)
            if fingerprint is None or fingerprint[1] is None or fingerprint != self.fingerprint:
                self.catalog, self.covers = read_catalog(storage, space_record), set()
                self.fingerprint = fingerprint if fingerprint and fingerprint[1] else None
            self.checked_at = time.monotonic()
        cover = (space_record["space"], space_record.get("run"), tuple(sorted(batches)) if batches else None)
        if cover not in self.covers or cover[1] is None:
            wanted = sorted(space_record["vectors"]) if batches is None else sorted(batches)
            check_covered(storage, space_record, self.catalog, wanted)
            self.covers.add(cover)
        for key in set(self.pieces) - {p["key"] for p in self.catalog["pieces"]}:
            del self.pieces[key]
        return self.catalog


def search(
    storage: Storage,
    space_record: dict,
    query_vector: np.ndarray,
    k: int,
    batches: list[str] | None = None,
    cache: Path | None = None,
    opened: OpenIndex | None = None,
) -> list[Match]:
    """The k vectors of the space nearest to query_vector (already in the space), best first: the
    top k of each piece holding a wanted batch (every batch, or only `batches`), merged. MissingPiece
    before any search when a batch is in no piece. cache: a folder keeping downloaded pieces between
    searches (an S3 lake; None downloads each piece for each search). opened: what a long-lived
    reader keeps between searches (OpenIndex: open pieces, the catalog while it is unchanged)."""
    wanted = None if batches is None else set(batches)  # None: every batch (no set work per search)
    if opened is None:
        catalog = require_pieces(storage, space_record, sorted(space_record["vectors"] if wanted is None else wanted))
    else:
        catalog = opened.current_catalog(storage, space_record, batches)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        current = {p["key"] for p in catalog["pieces"]}
        prune_cache(cache, {key + suffix for key in current for suffix in (INDEX_SUFFIX, ROWS_SUFFIX)})

    def get(key: str, scratch: Path) -> Path:
        return fetch(storage, key, scratch, cache)

    query = np.asarray(query_vector, dtype=np.float32)
    found: list[Match] = []
    with contextlib.ExitStack() as stack:
        scratch = None  # made when a piece must be opened: none for a search of pieces kept open
        for piece in catalog["pieces"]:
            if wanted is not None and not wanted & piece["members"].keys():
                continue
            open_now = opened.pieces.get(piece["key"]) if opened is not None else None
            if open_now is None:
                scratch = scratch or stack.enter_context(tempfile.TemporaryDirectory(prefix="fruits-search-"))
                open_now, lasting = open_files(get, storage.name, piece["key"], Path(scratch))
                if opened is not None and lasting:
                    opened.pieces[piece["key"]] = open_now
            found += search_open(open_now, piece, wanted, query, k)
            found = heapq.nlargest(k, found, key=lambda m: m.similarity)
            del open_now  # a piece opened from scratch closes before its folder goes
    return found
