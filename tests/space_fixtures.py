"""An embedding space written in the lake's contract (layout.py, issue 20), without Spark: vectors as
Parquet folders, basis.npz, and the pca/_commits/<run>.json that makes it current. Through a
Storage, so the same helpers write a folder lake and a (moto) bucket."""

import functools
import io
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fruits.lake import published
from fruits_jobs import commits, layout


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
    """The PCA commit naming the space current, as the job writes it (commits.commit_file)."""
    record = {
        "job": "reduce_dimensions",
        "space": space,
        "new_space": run == space,
        "model": f"{layout.space_folder(layout.PCA, space)}/{layout.PCA_MODEL_DIR}",
        "basis": f"{layout.space_folder(layout.PCA, space)}/{layout.BASIS_FILE}",
        "metrics": f"{layout.space_run_folder(layout.PCA, space, run)}/{layout.PCA_METRICS_FILE}",
        "vectors": vectors,
        "added": sorted(vectors),
        # which version of each batch the space holds: the batch's newest features commit, if any
        "features_runs": {batch: published.newest_run(storage, batch) or "" for batch in vectors},
        "k": k,
        "k_rule": {"k": k, "variance": None},
        "input_dim": 1280,
        "n_images": 0,
        "explained_variance": [round(0.5 / (i + 1), 6) for i in range(k)],
        "total_explained_variance": 0.9,
        "plots": {},
        **extra,
    }
    path, data = commits.commit_file(storage.name + layout.PCA.rstrip("/"), run, record)
    storage.put_bytes(data, path[len(storage.name) :])
    return {**record, "run": run}
