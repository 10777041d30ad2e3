"""Mergeable moments of feature vectors: what lets the PCA grow with the day, not with the lake.

A batch's `BatchMoments` (its count, mean and scatter matrix, and per (split, label) the count and
sum of its vectors) is folded by the features job in its model pass, where the vectors are born, and
kept beside its features (layout.MOMENTS_FILE, named in its commit). Merged (Chan et al.'s pairwise
update), they give the covariance of any set of batches exactly, so the PCA's spectrum and its drift
checks read a fixed-size state, never the vectors again; the per-class sums give class centroids in
any basis (the projection is linear). float64 throughout: float32 scatter sums lose the small
eigenvalues.
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


class Moments(NamedTuple):
    """Count, mean and centred scatter matrix (d x d) of a set of rows: mergeable, so one pass
    over any number of rows needs memory for d x d numbers only."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> Moments:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0)
        centred = x - mean
        return cls(len(x), mean, centred.T @ centred)

    def merge(self, other: Moments) -> Moments:
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(
            n, self.mean + delta * (other.n / n), self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        )

    def scatter_about(self, centre: np.ndarray) -> np.ndarray:
        """Sum over the rows of (x - centre)(x - centre)^T: their spread as seen from another mean."""
        delta = self.mean - centre
        return self.m2 + self.n * np.outer(delta, delta)


ClassKey = tuple[str, str]  # (split, label); split "" when the photo's path has no split folder


def half_of(path: str) -> int:
    """Which half a photo's moments go to (0 or 1): fixed by its path, so a re-run splits alike."""
    return zlib.crc32(path.encode("utf-8")) & 1


@dataclass
class BatchMoments:
    """A set of batches' moments, kept as two halves split by path (their merge is the whole; the
    halves let a fitted space estimate what it keeps of photos it was not fitted on), and per
    (split, label) the count and the sum of the vectors."""

    halves: tuple[Moments, Moments]
    classes: dict[ClassKey, tuple[int, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def empty(cls, dim: int) -> BatchMoments:
        return cls((Moments.empty(dim), Moments.empty(dim)))

    @property
    def moments(self) -> Moments:
        return self.halves[0].merge(self.halves[1])

    @property
    def dim(self) -> int:
        return len(self.halves[0].mean)

    def merge(self, other: BatchMoments) -> BatchMoments:
        classes = dict(self.classes)
        for key, (n, total) in other.classes.items():
            had_n, had_total = classes.get(key, (0, 0.0))
            classes[key] = (had_n + n, had_total + total)
        halves = (self.halves[0].merge(other.halves[0]), self.halves[1].merge(other.halves[1]))
        return BatchMoments(halves, classes)

    def add_rows(self, x: np.ndarray, splits, labels, paths) -> BatchMoments:
        """These moments plus rows x (n x d) with their splits, labels (None: no label) and paths."""
        builder = MomentsBuilder(self.dim)
        builder.add(x, splits, labels, paths)
        return self.merge(builder.result())

    def class_means(self, split: str | None) -> dict[str, np.ndarray]:
        """label -> mean vector of the photos of that split (None: of every split)."""
        sums: dict[str, tuple[int, np.ndarray]] = {}
        for (s, label), (n, total) in self.classes.items():
            if split is None or s == split:
                had_n, had_total = sums.get(label, (0, 0.0))
                sums[label] = (had_n + n, had_total + total)
        return {label: total / n for label, (n, total) in sums.items() if n}

    def labels(self) -> set[str]:
        return {label for _, label in self.classes}

    def labelled_photos(self, labels: set[str] | None = None) -> int:
        return sum(n for (_, label), (n, _) in self.classes.items() if labels is None or label in labels)

    def splits(self) -> set[str]:
        return {s for s, _ in self.classes}

    def to_bytes(self, extractor: dict | None = None) -> bytes:
        """The npz file; extractor: how the features were made (extractors.py), kept with them."""
        keys = sorted(self.classes)
        buffer = io.BytesIO()
        np.savez(
            buffer,
            **{  # type: ignore[arg-type]
                f"{name}{h}": value
                for h, half in enumerate(self.halves)
                for name, value in zip(("n", "mean", "m2"), half, strict=True)
            },
            class_keys=np.array(json.dumps(keys)),
            class_counts=np.array([self.classes[k][0] for k in keys], dtype=np.int64),
            class_sums=np.array([self.classes[k][1] for k in keys], dtype=np.float64).reshape(len(keys), self.dim),
            extractor=np.array(json.dumps(extractor)),
        )
        return buffer.getvalue()

    @staticmethod
    def extractor_of(data: bytes) -> dict | None:
        """The extractor a moments file was made with (None: before extractors were recorded)."""
        with np.load(io.BytesIO(data)) as z:
            return json.loads(str(z["extractor"])) if "extractor" in z else None

    @classmethod
    def from_bytes(cls, data: bytes) -> BatchMoments:
        with np.load(io.BytesIO(data)) as z:
            keys = [tuple(k) for k in json.loads(str(z["class_keys"]))]
            classes = {
                (k[0], k[1]): (int(n), np.array(total))
                for k, n, total in zip(keys, z["class_counts"], z["class_sums"], strict=True)
            }
            a, b = (Moments(int(z[f"n{h}"]), np.array(z[f"mean{h}"]), np.array(z[f"m2{h}"])) for h in (0, 1))
            return cls((a, b), classes)


# Rows per Arrow batch and per scatter update in the fold: 2,048 vectors are 10 MB of float32, and
# per block the update's fixed cost (a d x d add) is ~1 % of its BLAS work (measured: 8-row blocks
# cost 2.7 ms a row, 2,000-row blocks 0.06 ms).
FOLD_ROWS = 2048
# Rows per scatter update where the vectors are born (the features job's model pass, 8 rows an Arrow
# batch): 5 MB of buffered float64 per worker; measured on one core, 0.07 ms a row (0.06 at 2,048,
# 0.11 at 256), under 1 % of the model's ~11 ms a row.
MODEL_PASS_ROWS = 512


class Scatter:
    """Count, sum and scatter of rows about a fixed shift (the first block's mean, so the sums stay
    small and float64 keeps the small eigenvalues), updated in place: per block one BLAS rank-k
    update (numpy gives x.T @ x to syrk) into a reused d x d buffer, no new matrix per batch."""

    def __init__(self, dim: int):
        self.n, self.shift = 0, np.zeros(dim)
        self.total, self.scatter, self._block = np.zeros(dim), np.zeros((dim, dim)), np.empty((dim, dim))

    def add(self, x: np.ndarray) -> None:
        if not len(x):
            return
        if self.n == 0:
            self.shift = x.mean(axis=0)
        centred = x - self.shift
        self.total += centred.sum(axis=0)
        np.dot(centred.T, centred, out=self._block)
        self.scatter += self._block
        self.n += len(x)

    def moments(self) -> Moments:
        if self.n == 0:
            return Moments.empty(len(self.total))
        offset = self.total / self.n  # the mean, from the shift
        return Moments(self.n, self.shift + offset, self.scatter - self.n * np.outer(offset, offset))


class MomentsBuilder:
    """A BatchMoments built from rows in blocks of at least FOLD_ROWS (rows are buffered until then):
    one Scatter per half, per-class sums by one matrix product per block."""

    def __init__(self, dim: int, block_rows: int = FOLD_ROWS):
        self.dim, self.block_rows = dim, block_rows
        self.halves = (Scatter(dim), Scatter(dim))
        self.classes: dict[ClassKey, tuple[int, np.ndarray]] = {}
        self.buffered: list[tuple[np.ndarray, list, list, list]] = []
        self.pending = 0
        self.updates = 0  # blocks folded: what tests read to see the fold works in large blocks

    def add(self, x: np.ndarray, splits, labels, paths) -> None:
        self.buffered.append((np.asarray(x, dtype=np.float64), list(splits), list(labels), list(paths)))
        self.pending += len(x)
        if self.pending >= self.block_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        x = np.concatenate([b[0] for b in self.buffered])
        splits, labels, paths = ([v for b in self.buffered for v in b[i]] for i in (1, 2, 3))
        self.buffered, self.pending = [], 0
        self.updates += 1
        keys = [(s if isinstance(s, str) else "", lab) for s, lab in zip(splits, labels, strict=True)]
        labelled = [i for i, k in enumerate(keys) if k[1] is not None]
        if labelled:
            found = sorted({keys[i] for i in labelled})
            which = {key: j for j, key in enumerate(found)}
            one_hot = np.zeros((len(found), len(x)))
            one_hot[[which[keys[i]] for i in labelled], labelled] = 1.0
            counts, sums = one_hot.sum(axis=1), one_hot @ x
            for j, key in enumerate(found):
                had_n, had_total = self.classes.get(key, (0, 0.0))
                self.classes[key] = (had_n + int(counts[j]), had_total + sums[j])
        side = np.fromiter((half_of(p) for p in paths), dtype=np.int8, count=len(paths))
        for h in (0, 1):
            self.halves[h].add(x[side == h])

    def result(self) -> BatchMoments:
        self.flush()
        return BatchMoments((self.halves[0].moments(), self.halves[1].moments()), dict(self.classes))


def fold_udf(dim: int):
    """mapInPandas function over (label, split, features, reason): one row per partition with the
    count of each outcome (JSON), the BatchMoments of the featurized rows (reason null), the first
    path whose vector is not `dim` finite numbers, the largest Arrow batch it read and its scatter
    updates. One streaming pass, d x d memory."""

    def partition(batches):
        import pandas as pd

        builder, bad, largest = MomentsBuilder(dim), None, 0
        outcomes: dict[str, int] = {}
        for pdf in batches:
            largest = max(largest, len(pdf))
            reasons = pdf["reason"].to_numpy()
            for reason in pdf["reason"].dropna().unique():
                outcomes[reason] = outcomes.get(reason, 0) + int((reasons == reason).sum())
            kept = pdf[pdf["reason"].isna()]
            outcomes[""] = outcomes.get("", 0) + len(kept)
            vectors = kept["features"].to_numpy()
            ok = np.array([v is not None and len(v) == dim and np.isfinite(v).all() for v in vectors], dtype=bool)
            if not ok.all():
                bad = bad or str(kept["path"].to_numpy()[~ok][0])
                kept, vectors = kept[ok], vectors[ok]
            if len(vectors):
                labels = [None if pd.isna(v) else v for v in kept["label"]]
                splits = [None if pd.isna(v) else v for v in kept["split"]]
                builder.add(np.stack(vectors), splits, labels, [str(p) for p in kept["path"]])
        # A partition of rejects only sends no moments: two d x d float64 halves are 26 MB of zeros.
        builder.flush()
        moments = builder.result().to_bytes() if builder.updates else b""
        yield pd.DataFrame(
            {
                "outcomes": [json.dumps(outcomes)],
                "moments": [moments],
                "bad_path": [bad],
                "largest_batch": [largest],
                "updates": [builder.updates],
            }
        )

    return partition


FOLD_SCHEMA = "outcomes string, moments binary, bad_path string, largest_batch long, updates long"


class Folded(NamedTuple):
    """What one pass of fold() found: outcome counts ({reason: n}, featurized under None), the
    BatchMoments of the featurized rows, the first bad path, and how it read them (the largest
    Arrow batch, the scatter updates), which says whether it worked in large blocks."""

    outcomes: dict
    moments: BatchMoments
    bad_path: str | None
    largest_batch: int
    updates: int


def fold(df, dim: int) -> Folded:
    """One pass over df (path, label, split, features[, reason]) in Arrow batches of FOLD_ROWS,
    whatever the session's batch size (the features job keeps the model's, 8, for its model pass),
    in at most one Spark task per core, whose moments reach the driver one at a time
    (toLocalIterator). The PCA's fold of batches without stored moments; the features job folds its
    vectors in its model pass instead (features.py)."""
    from pyspark.sql import functions as F

    from fruits_jobs.common import session_conf

    if "reason" not in df.columns:
        df = df.withColumn("reason", F.lit(None).cast("string"))
    columns = df.select("path", "label", "split", "features", "reason")
    total, bad, largest, updates = BatchMoments.empty(dim), None, 0, 0
    outcomes: dict[str | None, int] = {}
    # Partitions merged (no shuffle): each sends its moments (26 MB) to the driver, where
    # toLocalIterator runs one Spark job per partition; the next one's runs while this one merges.
    cores = df.sparkSession.sparkContext.defaultParallelism
    columns = columns.coalesce(max(1, min(columns.rdd.getNumPartitions(), cores)))
    with session_conf(df.sparkSession, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(FOLD_ROWS)}):
        for row in columns.mapInPandas(fold_udf(dim), FOLD_SCHEMA).toLocalIterator(prefetchPartitions=True):
            for reason, n in json.loads(row["outcomes"]).items():
                outcomes[reason or None] = outcomes.get(reason or None, 0) + n
            if row["moments"]:
                total = total.merge(BatchMoments.from_bytes(row["moments"]))
            bad = bad or row["bad_path"]
            largest, updates = max(largest, row["largest_batch"]), updates + row["updates"]
    return Folded({reason: n for reason, n in outcomes.items() if n}, total, bad, largest, updates)


def merge_udf(dim: int):
    """mapInPandas function over (moments): one row, their merge."""

    def partition(batches):
        import pandas as pd

        total = BatchMoments.empty(dim)
        for pdf in batches:
            for data in pdf["moments"]:
                total = total.merge(BatchMoments.from_bytes(data))
        yield pd.DataFrame({"moments": [total.to_bytes()]})

    return partition


def gather(staged, dim: int) -> BatchMoments:
    """The merged moments of the features job's staged outcomes, whose model-pass tasks each added a
    moments row (no path): one Spark task reads that column's non-null values (Parquet skips the
    rest) and merges them in a Python worker, so one 26 MB row reaches the driver, not one a task."""
    from pyspark.sql import functions as F

    rows = staged.where(F.col("moments").isNotNull()).select("moments").coalesce(1)
    merged = rows.mapInPandas(merge_udf(dim), "moments binary").collect()
    return BatchMoments.from_bytes(merged[0]["moments"]) if merged else BatchMoments.empty(dim)
