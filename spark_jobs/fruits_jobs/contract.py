"""The rules the Airflow side (plugins/fruits) and the Spark jobs both follow, defined once here.

Standard library only: the DAG imports this when it is parsed, and the jobs carry it in their
--py-files zip to EMR. Whatever both sides must agree on lives here and nowhere else: split
names, the batch-id rule, the names nobody reads (hidden/OS junk) and why, the label rule, every
reject reason, the weights' kinds and the entrypoints. The lake's path grammar is layout.py.
"""

import re
from collections.abc import Sequence

# ---- Photos: folders and labels ---------------------------------------------------------------

# Fruits-360 keeps its two splits as the top folders; a class folder may sit directly under the
# landing folder too (then the split is null).
SPLITS = ("Training", "Test")


def label_and_split(parts: Sequence[str]) -> tuple[str, str | None] | None:
    """(label, split) of a photo from its path parts relative to the batch root, or None.

    The label is the parent folder, which must be a class folder (not the root, not a split
    folder); the split is the folder above it when that is Training or Test.
    """
    if len(parts) < 2 or parts[-2] in SPLITS:
        return None
    split = parts[-3] if len(parts) >= 3 and parts[-3] in SPLITS else None
    return parts[-2], split


# ---- Names nobody reads ----------------------------------------------------------------------

# Files operating systems leave in folders; never a photo. Lower-case (Windows is case-blind).
OS_JUNK = {
    ".ds_store": "OS metadata file (macOS Finder)",
    "thumbs.db": "OS metadata file (Windows thumbnail cache)",
    "desktop.ini": "OS metadata file (Windows folder settings)",
}
APPLEDOUBLE_PREFIX = "._"  # macOS resource forks copied to non-Mac disks: "._<name>"
HIDDEN_REASON = "name starts with '.' or '_' (or is a partial copy): Spark's reader skips it"


def spark_skips_name(name: str) -> bool:
    """Spark 3.5's own rule for names its file listing ignores without a word.

    Mirrors HadoopFSUtils.shouldFilterOutPathName: names starting with '.' , names starting with
    '_' unless they contain '=' (partition folders), half-copied '*._COPYING_' files; Parquet's
    '_metadata'/'_common_metadata' are kept.
    """
    exclude = (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")
    return exclude and not name.startswith(("_common_metadata", "_metadata"))


def unreadable_name_reason(name: str) -> str | None:
    """Why a file or folder name is never read as a photo (OS junk, or hidden from Spark); else None."""
    if name.lower() in OS_JUNK:
        return OS_JUNK[name.lower()]
    if name.startswith(APPLEDOUBLE_PREFIX):
        return "AppleDouble resource fork (macOS)"
    if spark_skips_name(name):
        return HIDDEN_REASON
    return None


# ---- Batch ids -------------------------------------------------------------------------------

# Used verbatim as an S3 key part and a partition value: no '/', and no leading '.'/'_' (hidden).
BATCH_ID_MAX_LEN = 64
_BATCH_ID_BODY = rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{BATCH_ID_MAX_LEN - 1}}}"
# For the trigger form's JSON schema (ECMA-262, where '$' is the end of input). Python's '$' also
# matches before a trailing newline, so Python checks with is_valid_batch_id (fullmatch).
# Empty is allowed there: the form's "leave it empty" (the run's date), like null.
BATCH_ID_SCHEMA_PATTERN = f"^({_BATCH_ID_BODY})?$"
BATCH_ID_RULE = (
    f"letters, digits, '.', '_' or '-', starting with a letter or digit, at most {BATCH_ID_MAX_LEN} characters"
)
_BATCH_ID_RE = re.compile(_BATCH_ID_BODY)


def is_valid_batch_id(value) -> bool:
    return isinstance(value, str) and _BATCH_ID_RE.fullmatch(value) is not None


# ---- Reject reasons: every input ends featurized or in rejects/ with one of these -------------

REJECT_REASONS = {
    "empty_file": "0 bytes",
    "not_an_image": "no image format recognised (a text file, a PDF...)",
    "unsupported_format": "an image format outside JPEG, PNG, MPO, WEBP, BMP, GIF, TIFF",
    "truncated": "the file ends before the image does (a half-copied file)",
    "corrupt": "the image data cannot be decoded",
    "decompression_bomb": "more pixels than --max-pixels (100 Mpx by default)",
    "file_too_large": "more bytes than --max-file-bytes (64 MiB by default); never loaded",
    "hidden_file": HIDDEN_REASON,
    "no_class_folder": "not inside a class folder: the label is the parent folder's name",
    "decode_error": "the decoder failed in an unexpected way (the detail names the exception)",
    "non_finite_features": "the model's output has NaN or Inf values",
    "not_found": "listed in the batch's manifest but missing from storage",
}


def reject_reason(code: str) -> str:
    """code itself, once checked against REJECT_REASONS: a typo fails the first run, not a reader."""
    if code not in REJECT_REASONS:
        raise KeyError(f"unknown reject reason {code!r}; known: {sorted(REJECT_REASONS)}")
    return code


# ---- Packed batches: a batch's photos in Parquet shards (layout.shard_key) -----------------------

# The columns of a shard, one row per photo: its path in the landing folder (relative, '/'), label
# and split (label_and_split), the sha256 of its content, its size in bytes and the bytes themselves.
SHARD_COLUMNS = ("path", "label", "split", "sha256", "size", "bytes")
# What a manifest's "layout" says: one object per photo (what ingest wrote before shards; a manifest
# without "layout" is one of these), or Parquet shards.
LOOSE, PACKED = "objects", "shards"
# Larger files are never loaded by the features job (file_too_large): nothing a phone produces, and
# one Spark binary value cannot hold more than 2 GiB. Ingest does not pack them either.
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024

# ---- Features --------------------------------------------------------------------------------

FEATURE_DIM = 1280  # MobileNetV2's pooled output: the most principal components a PCA can have

# ---- Weights --------------------------------------------------------------------------------

# What --weights may name besides imagenet/random: Keras weights, or an ONNX model the features
# job exported from such weights (it keeps them in models/, model.onnx_cache_name).
KERAS_WEIGHTS_SUFFIX, ONNX_SUFFIX = ".weights.h5", ".onnx"
NAMED_WEIGHTS = ("imagenet", "random")  # --weights that name no file: Keras' download, a seeded init
WEIGHTS_SUFFIXES = (KERAS_WEIGHTS_SUFFIX, ONNX_SUFFIX)


def weights_suffix(name: str):
    """The weights file kind of name (one of WEIGHTS_SUFFIXES), or None."""
    return next((suffix for suffix in WEIGHTS_SUFFIXES if name.endswith(suffix)), None)


# ---- The code bundle: what spark-submit runs ----------------------------------------------------

FEATURES_ENTRYPOINT = "extract_features.py"
PCA_ENTRYPOINT = "reduce_dimensions.py"
# The longest each job may run (its sensor's and the service's timeout), sized for a real batch (tens of
# thousands of photos on a few m5.2xlarge nodes) with a wide margin; the tables' retention is no shorter
# (a running job's files are in no table's log until it commits: tables.vacuum).
JOB_TIMEOUT_S = {FEATURES_ENTRYPOINT: 6 * 3600, PCA_ENTRYPOINT: 2 * 3600}


def longest_job_hours() -> float:
    """The longest job's timeout, in hours: the least the tables' retention may be."""
    return max(JOB_TIMEOUT_S.values()) / 3600


PY_FILES_ZIP = "fruits_jobs.zip"
