"""The held-photo index: which photos the lake's batches list, read by ingest in a handful of files.

    manifests/batch_id=<id>.held.parquet    one batch's sha256 (32 bytes each), written by its ingest
                                            before its manifest: the source the pieces are built from
    manifests/held/catalog.json             the pieces, each with its members: batch -> version (the
                                            digest of the batch's sha256 set)
    manifests/held/pieces/<digest>.parquet  sha256 and batch of every photo of the piece's members

Ingest reads the catalog and its pieces, only the landing folder's hashes kept (memory follows the
landing folder and one record batch of a piece, not the lake), instead of one file per batch:
at most floor(log2 n) + 2 files for n batches, by the vector index's merge rule (tiers.plan). A
batch ingested again under its id (its run never published) gets a new version when its photos
change, so the piece holding the old list is rebuilt, never read: a photo is neither hidden nor
counted twice. A merge writes the new piece from the pieces it merges (plus the per-batch files of a
rebuilt piece's members), then the catalog (the switch); pieces neither the new nor the previous
catalog names are deleted. A lake without a catalog (ingested before it, or its catalog deleted)
gets one at its next ingest, from one listing of manifests/ (once).
"""

import hashlib
import io
import json
import logging
from collections.abc import Callable

from fruits.lake import tiers
from fruits.lake.storage import Storage
from fruits_jobs import commits, layout

log = logging.getLogger(__name__)

HashesOf = Callable[[str], list[str]]  # a batch's sha256 (hex), for a piece built from its members
SHA256_BYTES = 32
READ_ROWS = 65536  # a piece's rows read (and filtered) at a time
WHAT_TO_DO = "delete manifests/held/ (catalog and pieces): the next ingest rebuilds them from the batches' files"


def _type():
    import pyarrow as pa

    return pa.binary(SHA256_BYTES)


def index_bytes(hashes: list[str]) -> bytes:
    """The index file of a batch listing these sha256 (hex), sorted and without repeats."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = pa.array(sorted({bytes.fromhex(h) for h in hashes}), type=_type())
    out = io.BytesIO()
    # Hashes do not compress; no dictionary either: every value is distinct.
    pq.write_table(pa.table({"sha256": values}), out, compression="none", use_dictionary=False)
    return out.getvalue()


def version(hashes: list[str]) -> str:
    """A batch's version in the catalog: the digest of its sha256 set (the same photos, the same version)."""
    return hashlib.sha256(b"".join(sorted({bytes.fromhex(h) for h in hashes}))).hexdigest()[:20]


def wanted(hashes: set[str] | None):
    """The value set hashes() filters by (None: keep all), built once for every file read."""
    import pyarrow as pa

    return None if hashes is None else pa.array(sorted(bytes.fromhex(h) for h in hashes), type=_type())


def hashes(data: bytes, among) -> list[str]:
    """The sha256 (hex) of a batch's index file, only those in `among` (wanted()) when given."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    column = pq.read_table(io.BytesIO(data), columns=["sha256"]).column("sha256")
    if among is not None:
        column = column.filter(pc.is_in(column, value_set=among))
    return [value.hex() for value in column.to_pylist()]


def read_batch_file(storage: Storage, batch_id: str) -> list[str]:
    """A batch's held hashes, or DamagedLake naming its file and what to do."""
    key = layout.held_index_key(batch_id)
    try:
        return hashes(storage.read_bytes(key), None)
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise commits.DamagedLake(
            f"{storage.name}{key} is damaged ({exc}); delete it: ingest then reads the batch's manifest instead"
        ) from None


# ---- The catalog -----------------------------------------------------------------------------


def read_catalog(storage: Storage) -> dict | None:
    """The catalog ({"pieces": [{"key", "members"}]}), or None when the lake has none."""
    return tiers.read_catalog(
        storage, layout.held_catalog_key(), {"key", "members"}, "a held-photo catalog", WHAT_TO_DO
    )


def members(catalog: dict) -> dict[str, str]:
    """batch -> version of every batch the catalog holds."""
    return {b: v for piece in catalog["pieces"] for b, v in piece["members"].items()}


def lookup(storage: Storage, catalog: dict, among: set[str] | None) -> dict[str, list[str]]:
    """sha256 -> the batches listing it (sorted), for the hashes in `among` (None: all): the catalog's
    pieces read one record batch at a time."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    value_set = wanted(among)
    found: dict[str, set[str]] = {}
    for piece in catalog["pieces"]:
        try:
            rows = pq.ParquetFile(io.BytesIO(storage.read_bytes(piece["key"])))
            for part in rows.iter_batches(batch_size=READ_ROWS, columns=["sha256", "batch"]):
                if value_set is not None:
                    part = part.filter(pc.is_in(part.column("sha256"), value_set=value_set))
                for sha, batch in zip(part.column("sha256").to_pylist(), part.column("batch").to_pylist(), strict=True):
                    found.setdefault(sha.hex(), set()).add(batch)
        except (OSError, ValueError, KeyError) as exc:
            raise commits.DamagedLake(f"{storage.name}{piece['key']} is damaged ({exc}); {WHAT_TO_DO}") from None
    return {sha: sorted(batches) for sha, batches in found.items()}


# ---- Building (ingest, after its uploads, before its manifest) --------------------------------


def piece_rows(storage: Storage, members: dict[str, str], parts: list[dict], hashes_of: HashesOf):
    """A planned piece's rows (pyarrow Table: sha256, batch): the whole pieces it merges, read as
    they are, and its other members' hashes (hashes_of: the batch's own file, or its manifest)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(io.BytesIO(storage.read_bytes(p["key"])), columns=["sha256", "batch"]) for p in parts]
    covered = {b for p in parts for b in p["members"]}
    for batch in sorted(set(members) - covered):
        values = pa.array([bytes.fromhex(h) for h in hashes_of(batch)], type=_type())
        tables.append(pa.table({"sha256": values, "batch": pa.array([batch] * len(values), pa.string())}))
    schema = pa.schema([("sha256", _type()), ("batch", pa.string())])
    return pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()


def switch(storage: Storage, catalog: dict | None, wanted_members: dict[str, str], hashes_of: HashesOf) -> dict:
    """Bring the index to what tiers.plan plans for `wanted_members` (batch -> version): build the
    pieces it lacks, write the catalog (the switch), delete the pieces neither it nor the previous
    catalog names. The new catalog (the same one when nothing changed)."""
    import pyarrow.parquet as pq

    previous = catalog or {"pieces": []}
    have = {piece["key"]: piece for piece in previous["pieces"]}
    pieces = []
    for planned in tiers.plan([piece["members"] for piece in previous["pieces"]], wanted_members):
        key = layout.held_piece_key(tiers.digest(planned))
        if key not in have:
            whole = tiers.composed_of(planned, previous["pieces"])
            sink = io.BytesIO()
            pq.write_table(
                piece_rows(storage, planned, whole, hashes_of), sink, compression="none", row_group_size=READ_ROWS
            )
            storage.put_bytes(sink.getvalue(), key)
            log.info("held-photo index: %d batch(es) in %s%s", len(planned), storage.name, key)
            have[key] = {"key": key, "members": planned}
        pieces.append(have[key])
    new = {"pieces": sorted(pieces, key=lambda p: p["key"])}
    if catalog is not None and new == {"pieces": sorted(previous["pieces"], key=lambda p: p["key"])}:
        return catalog
    storage.put_bytes(json.dumps(new, indent=1).encode(), layout.held_catalog_key())  # the switch
    keep = {p["key"] for p in new["pieces"]} | {p["key"] for p in previous["pieces"]}
    storage.delete([key for key in storage.sizes(layout.HELD_PIECES) if key not in keep])
    return new


def record(storage: Storage, catalog: dict, batch_id: str, batch_hashes: list[str], hashes_of: HashesOf) -> dict:
    """Write the batch's own file, then take it into the index (switch). The new catalog."""
    storage.put_bytes(index_bytes(batch_hashes), layout.held_index_key(batch_id))
    return switch(storage, catalog, {**members(catalog), batch_id: version(batch_hashes)}, hashes_of)
