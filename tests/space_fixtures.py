"""An embedding space written in the lake's contract (layout.py, issue 20), without Spark: vectors as
Parquet folders, basis.npz, the run's record and the vectors table's commit that makes it current. Through a
Storage, so the same helpers write a folder lake and a (moto) bucket."""

import functools
import io
import json
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fruits.lake import published
from fruits.lake.storage import LocalStorage
from fruits_jobs import commits, layout, tables


@functools.cache
def run_id(day: int) -> str:
    """The run id of 2026-01-<day> (one per day): later days sort later (the newest commit is current)."""
    return commits.new_run_id(datetime(2026, 1, day, tzinfo=UTC))


def vectors_table(batch: str, vectors: np.ndarray, paths: list[str], labels: list[str | None]) -> pa.Table:
    k = vectors.shape[1]
    return pa.table(
        {
            "path": pa.array(paths, pa.string()),
            "label": pa.array(labels, pa.string()),
            "split": pa.array(["Training"] * len(paths), pa.string()),
            "batch_id": pa.array([batch] * len(paths), pa.string()),
            "pca": pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), k).cast(
                pa.list_(pa.float32())
            ),
        }
    )


def put_vectors(storage, space: str, batch: str, run: str, table: pa.Table, parts: int = 2) -> str:
    """A batch's vectors folder as Spark leaves it (part files, _SUCCESS); its key."""
    folder = layout.vectors_folder(layout.PCA, space, batch, run)
    bounds = np.linspace(0, table.num_rows, parts + 1).astype(int)
    for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        sink = io.BytesIO()
        pq.write_table(table.slice(start, stop - start), sink, row_group_size=50)
        storage.put_bytes(sink.getvalue(), f"{folder}/part-{i:05d}.snappy.parquet")
    storage.put_bytes(b"", f"{folder}/_SUCCESS")
    return folder


def put_basis(storage, space: str, components: np.ndarray) -> str:
    key = f"{layout.space_folder(layout.PCA, space)}/{layout.BASIS_FILE}"
    sink = io.BytesIO()
    k = components.shape[1]
    np.savez(sink, components=components, spectrum=np.full(k, 1.0 / k), mean=np.zeros(components.shape[0]))
    storage.put_bytes(sink.getvalue(), key)
    return key


def put_commit(storage, run: str, space: str, vectors: dict[str, str], k: int, **extra) -> dict:
    """The PCA run `run` publishing the space as the job does: its record (metrics.json, written
    first; commits.record_file's references), then one commit of the vectors table holding exactly
    these batches' folders (a folder without files gets one without rows, as the job writes for a
    batch without a featurized photo). As in the job, the run's own folders are the newest: the table
    names its run through them (tables.current_space)."""
    runs = published.published_runs(storage) if isinstance(storage, LocalStorage) else {}
    newest = max((folder.rstrip("/").rsplit("/", 1)[1] for folder in vectors.values()), default=None)
    if newest != run:
        raise ValueError(f"run {run}: the newest vectors folder is {newest}'s; a PCA run writes into its own")
    record = {
        "job": "reduce_dimensions",
        "run": run,
        "space": space,
        "new_space": run == space,
        "model": f"{layout.space_folder(layout.PCA, space)}/{layout.PCA_MODEL_DIR}",
        "basis": f"{layout.space_folder(layout.PCA, space)}/{layout.BASIS_FILE}",
        "metrics": layout.space_record_path(layout.PCA, space, run),
        "vectors": vectors,
        "added": sorted(vectors),
        # which version of each batch the space holds: the batch's published run, if any (a folder
        # lake's: delta-rs cannot reach moto's in-process S3)
        "features_runs": {batch: runs.get(batch, "") for batch in vectors},
        "k": k,
        "k_rule": {"k": k, "variance": None},
        "input_dim": 1280,
        "n_images": 0,
        "explained_variance": [round(0.5 / (i + 1), 6) for i in range(k)],
        "total_explained_variance": 0.9,
        "plots": {},
        **extra,
    }
    storage.put_bytes(json.dumps(layout.refer_record(record, storage.name)).encode(), record["metrics"])
    files = {}
    for batch, folder in vectors.items():
        found = [key for key in storage.sizes(folder.rstrip("/") + "/") if key.endswith(".parquet")]
        if not found:
            sink = io.BytesIO()
            pq.write_table(
                tables.VECTORS_SCHEMA.remove(tables.VECTORS_SCHEMA.get_field_index("space")).empty_table(), sink
            )
            storage.put_bytes(sink.getvalue(), f"{folder.rstrip('/')}/part-00000.snappy.parquet")
            found = [f"{folder.rstrip('/')}/part-00000.snappy.parquet"]
        files[(space, batch)] = [
            (storage.name + key, len(data), pq.read_metadata(io.BytesIO(data)).num_rows)
            for key in sorted(found)
            for data in [storage.read_bytes(key)]
        ]
    tables.publish(
        storage.name + layout.VECTORS,
        tables.VECTORS_SCHEMA,
        [tables.SPACE_COLUMN, layout.PARTITION_COLUMN],
        files,
        lambda partition: True,
        {"run": run, "space": space},
        options=storage.delta_options(),
    )
    return record


def put_published(storage, batch_id: str, run: str, put=None, fence=None, **extra) -> dict:
    """A batch published as the features job publishes it, without Spark: its manifest (as ingest
    writes it), a features file without rows in its run folder, its record under batch_runs/, then
    the features table's commit naming the file (the publication point). put(data, key): how the
    job's files are written (default: through storage); fence: the run's (tables.commit_actions).
    Returns the record."""
    put = put or storage.put_bytes
    if not storage.sizes(layout.manifest_key(batch_id)):
        storage.put_bytes(b'{"files": []}', layout.manifest_key(batch_id))
    folder = layout.run_folder(layout.batch_folder(layout.FEATURES, batch_id), run)
    sink = io.BytesIO()
    schema = tables.FEATURES_SCHEMA.remove(tables.FEATURES_SCHEMA.get_field_index(layout.PARTITION_COLUMN))
    pq.write_table(schema.empty_table(), sink)
    put(sink.getvalue(), f"{folder}/part-00000.snappy.parquet")
    record = {"batch_id": batch_id, "features": storage.name + folder, "read": 0, "featurized": 0, "rejected": 0}
    record.update(extra)
    put(commits.record_file(run, record, storage.name), layout.record_path("batch_runs", batch_id, run))
    tables.publish(
        storage.name + layout.FEATURES,
        tables.FEATURES_SCHEMA,
        [layout.PARTITION_COLUMN],
        {(batch_id,): [(f"{storage.name}{folder}/part-00000.snappy.parquet", len(sink.getvalue()), 0)]},
        lambda partition: partition.get(layout.PARTITION_COLUMN) == batch_id,
        {"run": run},
        fence,
        storage.delta_options(),
    )
    return {**record, "run": run}
