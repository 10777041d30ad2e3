"""A batch's photos packed into Parquet shards (contract.SHARD_COLUMNS), the way ingest uploads them.

Shard assignment is a pure function of the photos (sorted by path, cut at fixed sizes), so a run
interrupted after k shards plans the same shards again and skips those already stored with the same
sha256. Row groups hold about as many photos as the features job gives one Spark task (Spark splits
a Parquet file by row group), and a shard about what one S3 request carries well.
"""

from collections.abc import Iterator
from pathlib import Path

from fruits_jobs import contract
from fruits_jobs.digests import file_digests

SHARD_BYTES = 128 * 1024 * 1024
# ~ the features job's IMAGES_PER_TASK: a day's batch spreads over every core; and a byte cap, so a
# row group of phone photos still fits one task's memory.
PHOTOS_PER_ROW_GROUP = 2000
ROW_GROUP_BYTES = 32 * 1024 * 1024
# Only the small columns get statistics: `fruits photo` finds a photo's row group by path.
_STATISTICS = ["path", "label", "split", "sha256", "size"]


class ChangedWhilePacking(ValueError):
    """A photo's bytes differ from the sha256 its listing computed: it changed during the ingest."""


def cut(entries: list[dict], max_bytes: int, max_rows: int | None = None) -> list[list[dict]]:
    """entries in order, cut into runs of at most max_bytes (of their sizes) and max_rows: a run
    holds at least one entry, so one photo larger than max_bytes is a run of its own."""
    runs: list[list[dict]] = []
    size = 0
    for entry in entries:
        full = runs and (size + entry["size"] > max_bytes or (max_rows is not None and len(runs[-1]) >= max_rows))
        if not runs or full:
            runs.append([])
            size = 0
        runs[-1].append(entry)
        size += entry["size"]
    return runs


def plan_shards(entries: list[dict], shard_bytes: int = SHARD_BYTES) -> list[list[dict]]:
    """The shards of a batch's photos: sorted by path, cut at shard_bytes. Same photos, same shards."""
    return cut(sorted(entries, key=lambda e: e["path"]), shard_bytes)


def shard_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("label", pa.string()),
            ("split", pa.string()),
            ("sha256", pa.string()),
            ("size", pa.int64()),
            ("bytes", pa.binary()),
        ]
    )


def _rows(entries: list[dict], landing: Path) -> Iterator[tuple]:
    """(path, label, split, sha256, size, bytes) of each entry, its bytes checked against its sha256."""
    import hashlib

    for entry in entries:
        data = (landing / entry["path"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ChangedWhilePacking(f"{landing / entry['path']} changed during the ingest: run it again")
        label, split = contract.label_and_split(entry["path"].split("/")) or (None, None)
        yield entry["path"], label, split, entry["sha256"], len(data), data


def write_shard(entries: list[dict], landing: Path, dest: Path) -> str:
    """Write one shard of entries (landing files) to dest, a row group at a time (memory: one row
    group); returns the shard's sha256. The same entries give the same bytes (no timestamps)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = shard_schema()
    # JPEG and PNG are compressed already: storing them as they are saves the CPU on both sides.
    with pq.ParquetWriter(
        dest, schema, compression="none", use_dictionary=["label", "split"], write_statistics=_STATISTICS
    ) as writer:
        for group in cut(entries, ROW_GROUP_BYTES, PHOTOS_PER_ROW_GROUP):
            columns = list(zip(*_rows(group, landing), strict=True))
            table = pa.table(dict(zip(contract.SHARD_COLUMNS, columns, strict=True)), schema=schema)
            writer.write_table(table, row_group_size=len(group))
    return file_digests(dest, "sha256")[0]


def read_photo(source, path: str) -> bytes | None:
    """One photo's bytes from a shard (a local file or file-like object), or None when it holds none
    by that path; only the row groups whose path range covers it are read."""
    import pyarrow.parquet as pq

    table = pq.read_table(source, columns=["bytes"], filters=[("path", "==", path)])
    return table.column("bytes")[0].as_py() if table.num_rows else None
