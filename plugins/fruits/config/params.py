"""The run parameters (UI form) and their validation.

Airflow validates a trigger's conf against these JSON schemas; `validate()` applies the same schemas
again in the run's first task (a `dag.test` or a scheduled run's defaults pass no form), plus what a
schema cannot say (a trailing newline, NaN, Graviton types; paths and weights in config/run.py), so a
bad run fails before it uploads or starts anything, with a message that names the parameter.
Names are a contract: the UI test and the docs use them.
"""

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.exceptions import ParamValidationError
from airflow.sdk import Param

from fruits.config.settings import setting_from_env
from fruits.registry import BACKENDS
from fruits_jobs import contract, extractors, layout

INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")  # checked with fullmatch: no trailing newline
MAX_NODES = 50  # guards against a typo starting a huge cluster
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first bytes of every HDF5 file (HDF5 file format spec)
EMR_SECTION = "EMR cluster (backend emr only)"  # the form groups these fields apart
# Graviton (arm64) families: a `g` right after the generation number (m7g, c6gn, r8g, t4g, im4gn, x2gd,
# is4gen, g5g; EC2 "instance type naming conventions": g = AWS Graviton processors), plus the first
# Arm family, a1. tensorflow-cpu, pinned in spark_jobs/requirements.txt, ships no aarch64 wheel.
GRAVITON_RE = re.compile(r"^(a1|[a-z]+[0-9]+g[a-z-]*)\.")


def check_x86_64(name: str, itype: str) -> None:
    """EMR nodes must be x86_64: refuse a Graviton type, naming the param or setting."""
    if GRAVITON_RE.match(itype):
        raise InvalidParam(
            name,
            f"{itype} is a Graviton (arm64) type, and tensorflow-cpu has no aarch64 "
            "wheel: use an x86_64 type such as m5.2xlarge, m6i.2xlarge or c6i.2xlarge",
        )


class InvalidParam(ValueError):
    def __init__(self, name: str, problem: str):
        super().__init__(f"invalid param {name!r}: {problem}")
        self.param = name


def build_params() -> dict:
    # backend's default is read from the environment when the DAG is parsed (cheap, no DB), so a
    # deployment with AWS sets FRUITS_BACKEND=emr and a fresh checkout runs locally with no cloud.
    return {
        "batch_id": Param(
            None,
            type=["null", "string"],
            pattern=contract.BATCH_ID_SCHEMA_PATTERN,
            title="Batch id",
            description=f"Names the batch in the bucket (raw/batch_id=…): {contract.BATCH_ID_RULE}, "
            "e.g. 2026-12-01 or orchard-7.b. Empty: the run's date as YYYY-MM-DD (then "
            "YYYY-MM-DD.2, .3… when that day's batch is already published).",
        ),
        "landing_dir": Param(
            None,
            type=["null", "string"],
            title="Landing folder",
            description="Folder with the new photos, <Class>/<file> or Training|Test/<Class>/<file>. "
            "Empty: Airflow Variable fruits_landing_dir, else env FRUITS_LANDING_DIR, "
            "else ./data/landing of the repository.",
        ),
        "backend": Param(
            setting_from_env("backend"),
            type="string",
            enum=list(BACKENDS),
            title="Backend",
            description="emr: a transient EMR cluster. emr_serverless: job runs of the stack's EMR Serverless "
            "application, no cluster to boot (docs/aws.md, 'Choosing a backend'). local: the same spark-submit "
            "steps on this machine, with the bucket mapped to the local lake (FRUITS_LOCAL_LAKE).",
        ),
        # exclusiveMinimum, not minimum: the form marks an empty number field below its minimum as invalid.
        "pca_k": Param(
            None,
            type=["null", "integer"],
            exclusiveMinimum=0,
            maximum=contract.FEATURE_DIM,
            title="PCA components",
            description=f"Number of principal components, at most {contract.FEATURE_DIM} (the features' "
            "size). Empty: use pca_variance.",
        ),
        "pca_variance": Param(
            0.95,
            type="number",
            exclusiveMinimum=0,
            maximum=1,
            title="PCA variance",
            description="Smallest k explaining this share of variance, used when pca_k is empty.",
        ),
        "pca_refit": Param(
            "auto",
            type="string",
            enum=["auto", "always", "never"],
            title="PCA refit",
            description="auto: a new embedding space when the new photos have drifted from the current one "
            "(docs/spark-jobs.md, 'Spaces'); always: a new space now, every batch re-projected; never: keep "
            "the current space (a different pca_k or pca_variance is then refused). pca_k and pca_variance "
            "apply when a space is fitted; a value that differs from the current space's fits a new one.",
        ),
        "weights": Param(
            None,
            type=["null", "string"],
            title="Model weights",
            description="imagenet | random (tests) | a .weights.h5 file, or an .onnx model the job "
            "exported (models/*.onnx): s3://, or a path on this machine (for emr it is "
            "staged to s3://<bucket>/models/<sha256>.weights.h5 or .onnx). "
            "Empty: Variable fruits_weights / env FRUITS_WEIGHTS, else "
            f"s3://<bucket>/{layout.MODELS}{layout.DEFAULT_WEIGHTS_FILE} "
            "on emr (clusters need no internet); locally the genuine weights in "
            f"../shared/{layout.MODELS} when present (as make run), else imagenet.",
        ),
        "precision": Param(
            None,
            type=["null", "string"],
            enum=[None, *extractors.PRECISIONS],
            title="Model precision",
            description="fp32, or int8: the model quantized once per weights (calibrated on Training photos), "
            "faster on CPUs, slightly different features (docs/performance.md, 'Precision'). Empty: env "
            "FRUITS_PRECISION, else fp32. A value other than the current space's is refused unless "
            "change_extractor is set.",
        ),
        "change_extractor": Param(
            False,
            type="boolean",
            title="Change the extractor",
            description="Featurize with weights or a precision other than the current space's on purpose: "
            "every published batch is featurized again from its stored photos, then a new space is fitted, "
            "and both switch at once (docs/spark-jobs.md, 'Changing the extractor'). Off: such a run is refused before "
            "anything runs.",
        ),
        "rerun": Param(
            False,
            type="boolean",
            title="Re-run a published batch",
            description="Run both jobs again on the stored photos of batch_id (raw/; the landing folder is "
            "not read) and publish the result as a new run of the same batch, which replaces the old one at "
            "once: how a damaged batch (`fruits check`) is mended. Needs batch_id.",
        ),
        "instance_type": Param(
            "m5.2xlarge",
            type="string",
            pattern=INSTANCE_TYPE_RE.pattern,
            title="Worker instance type",
            section=EMR_SECTION,
            description="EC2 type of core and task nodes, x86_64 (no Graviton).",
        ),
        "core_count": Param(
            2,
            type="integer",
            minimum=1,
            maximum=MAX_NODES,
            title="Core nodes",
            section=EMR_SECTION,
            description="On-demand core nodes.",
        ),
        "task_spot_count": Param(
            0,
            type="integer",
            minimum=0,
            maximum=MAX_NODES,
            title="Spot task nodes",
            section=EMR_SECTION,
            description="Extra SPOT task nodes, 0 for none.",
        ),
    }


# What a failed pattern means, in words (a schema error only quotes the regex).
EXPECTED = {"batch_id": contract.BATCH_ID_RULE, "instance_type": "an EC2 instance type like m5.2xlarge"}


def validate(conf: Mapping[str, Any]) -> dict:
    """The params checked against the form's own schemas (Param.resolve, as the trigger form and the
    API check them), then for what a schema cannot say; returns them normalised. Defaults are
    resolved in config/run.py. Here, so a bad value fails the first task and names its param."""
    form = build_params()
    unknown = set(conf) - set(form)
    if unknown:
        raise InvalidParam(sorted(unknown)[0], f"unknown parameter; known: {sorted(form)}")
    out = {}
    for name, param in form.items():
        value = conf.get(name, param.value)
        try:
            out[name] = param.resolve(value)
        except ParamValidationError as exc:
            problem = getattr(exc.args[0], "message", str(exc)) if exc.args else str(exc)
            raise InvalidParam(
                name, f"{problem}" + (f" (expected {EXPECTED[name]})" if name in EXPECTED else "")
            ) from None
    if out["batch_id"] == "":  # left empty in the form: the run's date, as null
        out["batch_id"] = None
    if out["rerun"] and out["batch_id"] is None:
        raise InvalidParam("rerun", "re-runs one published batch: set batch_id to it (`fruits batches` lists them)")
    # JSON Schema's `pattern` is a search, whose '$' also matches before a trailing newline.
    if out["batch_id"] is not None and not contract.is_valid_batch_id(out["batch_id"]):
        raise InvalidParam("batch_id", f"expected {contract.BATCH_ID_RULE}, got {out['batch_id']!r}")
    if not INSTANCE_TYPE_RE.fullmatch(out["instance_type"]):
        raise InvalidParam("instance_type", f"expected {EXPECTED['instance_type']}, got {out['instance_type']!r}")
    check_x86_64("instance_type", out["instance_type"])
    if math.isnan(out["pca_variance"]):  # NaN passes every bound of a schema
        raise InvalidParam("pca_variance", "expected a number in (0, 1], got nan")
    out["pca_variance"] = float(out["pca_variance"])
    for name in ("pca_k", "core_count", "task_spot_count"):  # JSON's integer 2.0 is Python's 2
        out[name] = None if out[name] is None else int(out[name])
    return out


def check_weights(weights: str, backend: str) -> None:
    """weights must be something the backend's workers can load (a local run's file must exist)."""
    if weights in contract.NAMED_WEIGHTS:
        return
    if contract.weights_suffix(weights) is None:
        raise InvalidParam("weights", f"expected imagenet, random, a .weights.h5 or an .onnx file, got {weights!r}")
    if weights.startswith("s3://"):
        return  # the EMR pre-flight checks the object before a cluster is paid for
    if not Path(weights).is_file():
        raise InvalidParam("weights", f"file not found: {weights} (an s3:// URI, or a file on this machine)")
    with open(weights, "rb") as f:
        head = f.read(len(HDF5_SIGNATURE))
    if contract.weights_suffix(weights) == contract.KERAS_WEIGHTS_SUFFIX and head != HDF5_SIGNATURE:
        raise InvalidParam(
            "weights",
            f"{weights} is not an HDF5 file, so not Keras weights: pass the .weights.h5 "
            "that keras' model.save_weights() wrote",
        )
