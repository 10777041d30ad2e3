"""How well the features separate the classes, per class: nearest-centroid accuracy on the PCA vectors.

Centroids are the mean PCA vector of each class's Training photos (from the space's running class
sums: pca.Scoring), and the Test photos are each given the class of the nearest centroid; without a
Training/Test split, every labelled photo is both (optimistic, and said so in the result). Memory
does not grow with the photos: the predictions come from a pass with the centroids broadcast, and
only the (class, predicted) counts reach the driver.
"""

import numpy as np

TRAIN, TEST = "Training", "Test"
MOST_CONFUSED = 10


def confusion(df, means: dict[str, np.ndarray]) -> dict[tuple, int]:
    """(class, predicted class) -> photos, for the photos of df."""
    import pandas as pd
    from pyspark.sql import functions as F

    labels = sorted(means)
    matrix = df.sparkSession.sparkContext.broadcast(np.stack([means[c] for c in labels]))

    def predict(batches):
        for batch in batches:
            x = np.stack(batch["pca"].to_numpy()).astype(np.float64)
            centres = matrix.value
            d = (x**2).sum(1)[:, None] - 2 * x @ centres.T + (centres**2).sum(1)[None]
            yield pd.DataFrame({"label": batch["label"], "predicted": [labels[i] for i in d.argmin(1)]})

    counts = (
        df.select("label", "pca")
        .mapInPandas(predict, "label string, predicted string")
        .groupBy("label", "predicted")
        .agg(F.count("*").alias("n"))
        .collect()
    )
    return {(r["label"], r["predicted"]): r["n"] for r in counts}


def summarize(counts: dict[tuple, int], fitted_on: str, evaluated_on: str) -> dict:
    """Per-class and overall accuracy, and the most confused pairs, from the confusion counts."""
    totals: dict[str, int] = {}
    correct: dict[str, int] = {}
    for (label, predicted), n in counts.items():
        totals[label] = totals.get(label, 0) + n
        correct[label] = correct.get(label, 0) + (n if label == predicted else 0)
    confused = sorted(
        ((n, label, predicted) for (label, predicted), n in counts.items() if label != predicted),
        key=lambda t: (-t[0], t[1], t[2]),
    )[:MOST_CONFUSED]
    return {
        "method": "nearest centroid on the PCA vectors",
        "centroids_from": fitted_on,
        "evaluated_on": evaluated_on,
        "n_classes": len(totals),
        "n_evaluated": sum(totals.values()),
        "overall_accuracy": round(sum(correct.values()) / max(1, sum(totals.values())), 4),
        "per_class_accuracy": {label: round(correct[label] / totals[label], 4) for label in sorted(totals)},
        "most_confused": [{"class": label, "taken_for": predicted, "photos": n} for n, label, predicted in confused],
    }


def counts_to_json(counts: dict[tuple, int]) -> list:
    """Confusion counts as JSON: [[class, predicted, photos], ...], sorted."""
    return [[label, predicted, n] for (label, predicted), n in sorted(counts.items())]


def counts_from_json(rows: list) -> dict[tuple, int]:
    return {(label, predicted): int(n) for label, predicted, n in rows}


def worst_classes(quality: dict, n: int = 30) -> list[tuple]:
    return sorted(quality["per_class_accuracy"].items(), key=lambda kv: (kv[1], kv[0]))[:n]
