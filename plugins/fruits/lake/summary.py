"""What a person wants after a run: counts, k, explained variance, and where every output is."""

import json
import logging

from fruits.lake.published import current_commit, published_commit
from fruits.lake.storage import Storage
from fruits_jobs import layout

log = logging.getLogger(__name__)


def readable(uri: str | None) -> str | None:
    """A job's URI as a person types it: file:/a/b is the path /a/b; s3:// stays."""
    if uri and uri.startswith("file:"):
        return "/" + uri[len("file:") :].lstrip("/")
    return uri


def locations(root: str, batch_id: str, features: dict, pca: dict) -> dict:
    """Where a batch's current outputs are: root is the bucket (s3://bucket/) or the lake folder
    (with a trailing slash); features and pca are the batch's current commits."""
    where = {
        "manifest": root + layout.manifest_key(batch_id),
        "raw": root + layout.raw_prefix(batch_id),
        "features": features.get("features"),  # None: no photo of the batch could be featurized
        "rejects": features.get("rejects"),
        "features_commit": features["commit"],
        "pca_reduced": pca["reduced"],
        "pca_model": pca["model"],
        "metrics": f"{pca['output']}/{layout.PCA_METRICS_FILE}",
        "plots": list(pca["plots"].values()),
        "pca_commit": pca["commit"],
    }
    return {
        name: [readable(u) for u in value] if isinstance(value, list) else readable(value)
        for name, value in where.items()
    }


def read_summary(storage: Storage, batch_id: str) -> dict:
    """The batch's figures and outputs, from its current commits (so never from a half-run)."""
    features = published_commit(storage, batch_id)
    metrics = current_commit(storage, layout.PCA, batch_id)
    if features is None or metrics is None:
        raise RuntimeError(
            f"batch {batch_id} has no published {'features' if features is None else 'PCA'}: its job did not "
            "finish, or its run was given up (its lease revoked: manifests/batch_id=<id>.lease); see that task's log"
        )
    return {
        "batch_id": batch_id,
        "lake": storage.name,
        "images": {k: features.get(k) for k in ("read", "featurized", "rejected", "rejects_by_reason")},
        "pca": {
            "n_images": metrics["n_images"],
            "input_dim": metrics["input_dim"],
            "k": metrics["k"],
            "total_explained_variance": metrics["total_explained_variance"],
            "explained_variance_top10": metrics["explained_variance"][:10],
        },
        "locations": locations(storage.name, batch_id, features, metrics),
    }


def add_run_report(storage: Storage, metrics_uri: str, report: dict) -> None:
    """Put the run report into the batch's metrics.json, beside the outputs it describes (one write:
    S3 replaces an object whole, the lake folder by a rename)."""
    if not metrics_uri.startswith(storage.name):
        raise RuntimeError(f"{metrics_uri} is not in {storage.name}: the PCA wrote outside the lake")
    key = metrics_uri[len(storage.name) :]
    metrics = json.loads(storage.read_text(key))
    storage.put_bytes(json.dumps({**metrics, "run_report": report}, indent=2, allow_nan=False).encode(), key)


# The two outputs a downstream DAG can be scheduled on (schedule=[FEATURES_ASSET]). Names, not
# bucket URIs: the same asset whatever the deployment's bucket; the event's extra says where.
FEATURES_ASSET_URI = "fruits://lake/features"
PCA_ASSET_URI = "fruits://lake/pca"


def asset_extras(result: dict) -> dict:
    """What each asset event carries (JSON): the batch, its counts or its PCA, and its locations,
    relative to the lake (`lake`: where it was when the event was sent)."""
    images, pca = result["images"], result["pca"]
    where = {
        name: layout.refer(value, readable(result["lake"])) if isinstance(value, str) else value
        for name, value in result["locations"].items()
    }
    return {
        FEATURES_ASSET_URI: {
            "batch_id": result["batch_id"],
            "lake": result["lake"],
            **images,
            "features": where["features"],
            "rejects": where["rejects"],
            "commit": where["features_commit"],
        },
        PCA_ASSET_URI: {
            "batch_id": result["batch_id"],
            "lake": result["lake"],
            "k": pca["k"],
            "n_images": pca["n_images"],
            "explained_variance": pca["total_explained_variance"],
            "reduced": where["pca_reduced"],
            "model": where["pca_model"],
            "metrics": where["metrics"],
            "commit": where["pca_commit"],
        },
    }


def format_locations(where: dict) -> str:
    lines = []
    for name, value in where.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"  {name:<15} {item if item is not None else '(none)'}")
    return "\n".join(lines)
