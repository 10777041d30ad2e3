"""How features were made (an extractor): one value, so that a space holds only comparable vectors.

An extractor is a small record: the weights (by content), the image size, the engine, the precision
and the export (what turned the weights into the graph the workers run, by its tools' versions). Its
`id` is a digest of the record. The features job records it in each batch's run record, its moments
and its features commit; the PCA job records the one a space was fitted with and refuses a batch made
with another. Standard library only: the Airflow side predicts a run's extractor before anything runs.

How the weights are named, before a run starts and in the job alike:
- a file (.weights.h5 or .onnx, a path or an s3:// URI): `sha256:<digest of its bytes>`, never its
  path (a copy elsewhere is the same weights; a new file under an old name is not);
- `imagenet`: the file Keras downloads for the image size (its URL is fixed per Keras release, so
  the name fixes the content): `keras:mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_<rows>_no_top.h5`;
- `random`: `random:seed-<seed>` (tests and benchmarks only).
"""

from __future__ import annotations

import hashlib
import json

PRECISIONS = ("fp32", "int8")
DEFAULT_PRECISION = "fp32"
# The features job's defaults, which the DAG's runs use: what a run's extractor is predicted with.
DEFAULT_IMAGE_SIZE = 224
DEFAULT_ENGINE = "onnxruntime"
# What a run's params choose; the export is chosen by the jobs' lock (tool versions), so it is
# checked by the PCA job (which sees the batches' records), not before the run.
PARAM_FIELDS = ("weights", "image_size", "engine", "precision")
FIELDS = (*PARAM_FIELDS, "export")
RANDOM_SEED = 1234  # --weights random's (model.load_model)
KERAS_IMAGENET_SIZES = (96, 128, 160, 192, 224)  # Keras has ImageNet weights for these; else the 224 ones


def weights_name(source: str, image_size: int, sha256: str | None = None) -> str:
    """The weights part of an extractor: see the module's docstring. sha256: the digest of the file's
    bytes (required for a file)."""
    if source == "random":
        return f"random:seed-{RANDOM_SEED}"
    if source == "imagenet":
        rows = image_size if image_size in KERAS_IMAGENET_SIZES else 224
        return f"keras:mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
    if not sha256:
        raise ValueError(f"weights {source}: a file is named by the sha256 of its bytes, none given")
    return f"sha256:{sha256}"


def extractor(weights: str, image_size: int, engine: str, precision: str, export: str | None = None) -> dict:
    """The record, with its id (export None: the part a run's params choose, for comparing before a run)."""
    record = {"weights": weights, "image_size": int(image_size), "engine": engine, "precision": precision}
    if export is not None:
        record["export"] = export
        record["id"] = digest(record)
    return record


def digest(record: dict) -> str:
    """16 hex digits of the sha256 of the record's fields (canonical JSON): equal iff the fields are."""
    fields = {name: record[name] for name in FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def differences(a: dict, b: dict, fields: tuple[str, ...] = FIELDS) -> list[str]:
    """The fields in which two extractors differ, as 'name: a -> b'."""
    return [f"{name}: {a.get(name)} -> {b.get(name)}" for name in fields if a.get(name) != b.get(name)]


def describe(record: dict | None) -> str:
    """One line for a message: 'a1b2c3d4e5f6a7b8 (224 px, onnxruntime fp32, weights sha256:6714965a05ee…)'."""
    if not record:
        return "none recorded"
    weights = record["weights"]
    short = weights[: len("sha256:") + 12] + "…" if weights.startswith("sha256:") else weights
    ident = f"{record['id']} " if "id" in record else ""
    return f"{ident}({record['image_size']} px, {record['engine']} {record['precision']}, weights {short})"


def refusal(space: dict | None, planned: dict) -> tuple[str, str] | None:
    """(the param to change, why) when a run featurizing with `planned` (its PARAM_FIELDS) would make
    features the current space cannot take; None when it can (or there is no space, or the space
    predates extractor records)."""
    space = space or {}
    current = space.get("extractor") or {}
    change = differences(current, planned, PARAM_FIELDS) if current else []
    if not change:
        return None
    param = "precision" if current["precision"] != planned["precision"] else "weights"
    return param, (
        f"this run would featurize with {describe(planned)}, but the current space {space['space']} holds "
        f"features of {describe(current)} ({'; '.join(change)}): its batches could never join it. Pass the "
        "space's weights and precision, or set change_extractor to re-featurize every published batch and "
        "fit a new space (docs/spark-jobs.md, 'Changing the extractor')"
    )
