"""What a person wants after a run: counts, k, explained variance, and where every output is."""
import json
import logging

from fruits import layout
from fruits.storage import Storage

log = logging.getLogger(__name__)


def locations(root: str, batch_id: str) -> dict:
    """root is the bucket (s3://bucket/) or the local lake folder (with a trailing slash)."""
    pca = root + layout.pca_prefix(batch_id)
    return {
        "manifest": root + layout.manifest_key(batch_id),
        "raw": root + layout.raw_prefix(batch_id),
        "features": root + layout.batch_prefix(layout.FEATURES, batch_id),
        "rejects": root + layout.batch_prefix(layout.REJECTS, batch_id),
        "pca": pca,
        "pca_reduced": f"{pca}{layout.PCA_REDUCED_DIR}/",
        "pca_model": f"{pca}{layout.PCA_MODEL_DIR}/",
        "metrics": root + layout.pca_metrics_key(batch_id),
        "plots": [pca + name for name in layout.PCA_PLOTS.values()],
    }


def read_summary(storage: Storage, batch_id: str) -> dict:
    features = json.loads(storage.read_text(layout.features_summary_key(batch_id)))
    metrics = json.loads(storage.read_text(layout.pca_metrics_key(batch_id)))
    return {
        "batch_id": batch_id,
        "images": {k: features.get(k) for k in ("read", "featurized", "rejected", "rejects_by_reason")},
        "pca": {
            "n_images": metrics["n_images"],
            "input_dim": metrics["input_dim"],
            "k": metrics["k"],
            "total_explained_variance": metrics["total_explained_variance"],
            "explained_variance_top10": metrics["explained_variance"][:10],
        },
        "locations": locations(storage.name, batch_id),
    }


def format_locations(where: dict) -> str:
    lines = []
    for name, value in where.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"  {name:<12} {item}")
    return "\n".join(lines)
