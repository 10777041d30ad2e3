"""What a person wants after a run: counts, k, explained variance, and where every output is."""

import json
import logging

from fruits.lake.published import current_space, in_space, published_record, read_record
from fruits.lake.storage import Storage
from fruits_jobs import layout

log = logging.getLogger(__name__)


def readable(uri: str | None) -> str | None:
    """A job's URI as a person types it: file:/a/b is the path /a/b; s3:// stays."""
    if uri and uri.startswith("file:"):
        return "/" + uri[len("file:") :].lstrip("/")
    return uri


def locations(root: str, batch_id: str | None, features: dict | None, space: dict) -> dict:
    """Where a batch's current outputs are, and the space's: root is the bucket (s3://bucket/) or the
    lake folder (with a trailing slash); features (None: a run without a batch) is the batch's
    published run record, space the current space's record."""
    where: dict = {}
    if batch_id is not None and features is not None:
        where.update(
            manifest=root + layout.manifest_key(batch_id),
            raw=root + layout.raw_prefix(batch_id),
            features=features.get("features"),  # None: no photo of the batch could be featurized
            rejects=features.get("rejects"),
            features_record=features["record"],
            pca_vectors=space["vectors"].get(batch_id),
        )
    where.update(
        pca_model=space["model"],
        metrics=space["metrics"],
        run_report=layout.run_report_path(space["metrics"]),  # written by publish_summary, after the PCA
        plots=list(space["plots"].values()),
    )
    return {
        name: [readable(u) for u in value] if isinstance(value, list) else readable(value)
        for name, value in where.items()
    }


def read_summary(storage: Storage, batch_id: str | None) -> dict:
    """The batch's figures and outputs, and the current space's, from what is published (so never
    from a half-run). batch_id None: a run that brought no photos (only the space changed)."""
    space = current_space(storage)
    features = published_record(storage, batch_id) if batch_id is not None else None
    if space is None or (batch_id is not None and not in_space(space, features)):
        raise RuntimeError(
            f"batch {batch_id} is not {'published' if features is None else 'in the current embedding space'}: "
            "its job did not finish, or its run was given up (its lease revoked: manifests/batch_id=<id>.lease); "
            "see that task's log"
        )
    return {
        "batch_id": batch_id,
        "lake": storage.name,
        "images": {k: features.get(k) for k in ("read", "featurized", "rejected", "rejects_by_reason")}
        if features
        else None,
        "pca": {
            "space": space["space"],
            "new_space": space["new_space"],
            "refit_reason": space.get("refit_reason"),
            "n_images": space["n_images"],
            "input_dim": space["input_dim"],
            "k": space["k"],
            "total_explained_variance": space["total_explained_variance"],
            "explained_variance_top10": space["explained_variance"][:10],
        },
        "locations": locations(storage.name, batch_id, features, space),
    }


def photos_read(storage: Storage, space: dict) -> int:
    """The photos the space's batches' current runs read: what a change_extractor run featurized again
    (one record read per batch: that run alone touches the whole lake)."""
    return sum(
        read_record(storage, batch, run).get("read") or 0 for batch, run in space.get("features_runs", {}).items()
    )


def write_run_report(storage: Storage, metrics_uri: str, report: dict) -> str:
    """Write the run report beside the PCA run's metrics.json (metrics_uri, as `locations` gives it),
    in run_report.json: a file nothing names, so the run's record (metrics.json) stays as the job
    wrote it. Returns the report's URI."""
    uri = layout.run_report_path(metrics_uri)
    if not uri.startswith(storage.name):
        raise RuntimeError(f"{metrics_uri} is not in {storage.name}: the PCA wrote outside the lake")
    storage.put_bytes(json.dumps(report, indent=2, allow_nan=False).encode(), uri[len(storage.name) :])
    return uri


# The two outputs a downstream DAG can be scheduled on (schedule=[FEATURES_ASSET]). Names, not
# bucket URIs: the same asset whatever the deployment's bucket; the event's extra says where.
FEATURES_ASSET_URI = "fruits://lake/features"
PCA_ASSET_URI = "fruits://lake/pca"


def asset_extras(result: dict) -> dict:
    """What each asset event carries (JSON): the batch, its counts or the space, and locations
    relative to the lake (`lake`: where it was when the event was sent). A consumer of the PCA
    re-reads every batch's vectors when `new_space` is true, else just this batch's `vectors`."""
    images, pca = result["images"] or {}, result["pca"]
    where = {
        name: layout.refer(value, readable(result["lake"])) if isinstance(value, str) else value
        for name, value in result["locations"].items()
    }
    return {
        FEATURES_ASSET_URI: {
            "batch_id": result["batch_id"],
            "lake": result["lake"],
            **images,
            "features": where.get("features"),
            "rejects": where.get("rejects"),
            "record": where.get("features_record"),
        },
        PCA_ASSET_URI: {
            "batch_id": result["batch_id"],
            "lake": result["lake"],
            "space": pca["space"],
            "new_space": pca["new_space"],
            "k": pca["k"],
            "n_images": pca["n_images"],
            "explained_variance": pca["total_explained_variance"],
            "vectors": where.get("pca_vectors"),
            "model": where["pca_model"],
            "metrics": where["metrics"],
            "table": layout.VECTORS.rstrip("/"),  # the vectors Delta table, every batch's vectors in the space
        },
    }


def format_locations(where: dict) -> str:
    lines = []
    for name, value in where.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"  {name:<15} {item if item is not None else '(none)'}")
    return "\n".join(lines)
