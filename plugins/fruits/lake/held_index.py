"""A batch's held-photo index: the sha256 of every photo its manifest lists, as one Parquet column of
32-byte values (layout.held_index_key), written with the manifest.

Ingest reads it instead of every manifest's JSON to know which landing photos a published batch
already holds: 32 bytes per photo (about 320 MB for 10 million photos over all batches), read by
column, only the matches kept, so memory follows the landing folder, not the lake.
"""

import io

SHA256_BYTES = 32


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


def wanted(hashes: set[str] | None):
    """The value set hashes() filters by (None: keep all), built once for every batch's index."""
    import pyarrow as pa

    return None if hashes is None else pa.array(sorted(bytes.fromhex(h) for h in hashes), type=_type())


def hashes(data: bytes, among) -> list[str]:
    """The sha256 (hex) of an index file, only those in `among` (wanted()) when given."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    column = pq.read_table(io.BytesIO(data), columns=["sha256"]).column("sha256")
    if among is not None:
        column = column.filter(pc.is_in(column, value_set=among))
    return [value.hex() for value in column.to_pylist()]
