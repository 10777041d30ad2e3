"""The bodies of the DAG's tasks that every backend shares: each takes the run's config (a dict in
XCom, a RunConfig here) and returns JSON. What differs by backend goes through its Backend object."""

import dataclasses
import json
import logging
import tempfile
from pathlib import Path

from botocore.exceptions import ClientError

from fruits.backends import backend_named, jobs
from fruits.backends.run_report import format_report
from fruits.config import run as config
from fruits.config.params import InvalidParam
from fruits.config.run import RunConfig, from_xcom
from fruits.lake import extractor, ingest, migrate, published, summary, vector_index
from fruits.lake.storage import Storage, storage_at, upload_missing
from fruits_jobs import extractors, layout
from fruits_jobs.bundle import build_bundle

log = logging.getLogger(__name__)


def storage_for(cfg: RunConfig) -> Storage:
    return storage_at(cfg.root, cfg.bucket, cfg.aws_conn_id)


def run_date(context) -> str:
    # A manual run in Airflow 3 may have no logical date; run_after always exists.
    when = context.get("logical_date") or context["dag_run"].run_after
    return when.strftime("%Y-%m-%d")


def validate_params(context) -> dict:
    cfg = config.resolve(context["params"], config.read_settings(), run_date(context), backend_named)
    migrate.check_layout(storage_for(cfg))  # a lake from before the tables: `fruits migrate` first
    if not context["params"].get("batch_id"):  # named by the date: never reopen a published batch
        cfg = dataclasses.replace(cfg, batch_id=ingest.next_free_batch_id(storage_for(cfg), cfg.batch_id))
    if cfg.rerun and not published.is_published(storage_for(cfg), cfg.batch_id):
        raise InvalidParam("rerun", f"batch {cfg.batch_id} is not published: run it without rerun")
    space = published.current_space(storage_for(cfg))
    if cfg.pca_refit == "never" and space is not None and cfg.pca_rule != space["k_rule"]:
        raise InvalidParam(
            "pca_refit",
            f"'never' keeps the current space ({space['space']}, k rule {space['k_rule']}), but pca_k/pca_variance "
            f"ask for {cfg.pca_rule}: pass the space's values, or set pca_refit to auto",
        )
    check_extractor(cfg, space)
    check_calibration(cfg)
    log.info("run config: %s", json.dumps(cfg.to_dict(), indent=1))
    return cfg.to_dict()


def check_calibration(cfg: RunConfig) -> None:
    """precision=int8 calibrates on the lake's calibration photos: refused before anything runs without them."""
    if cfg.precision == "int8" and not storage_for(cfg).sizes(layout.CALIBRATION):
        raise InvalidParam(
            "precision",
            f"int8 calibrates on Training photos in {cfg.uri(layout.CALIBRATION)}, which holds none: copy a few "
            "hundred Training photos of your classes there (docs/performance.md, 'Precision'), or use fp32",
        )


def check_extractor(cfg: RunConfig, space: dict | None) -> None:
    """One extractor per space (fruits_jobs/extractors.py): a run whose params would featurize
    differently from the current space is refused here, before anything runs, unless it asks to
    change the extractor; one that asks must bring a change."""
    if not (space or {}).get("extractor") and not cfg.change_extractor:
        return  # nothing to compare with: the weights are not read
    local_weights = backend_named(cfg.backend).weights_to_stage(cfg)
    try:
        sha256 = extractor.weights_sha256(cfg.weights, local_weights, storage_for(cfg), cfg.uri())
    except (OSError, ClientError) as exc:  # missing or unreadable: the backend's checks and the job say so
        log.warning("weights %s cannot be read here (%s): the PCA job checks the extractor", cfg.weights, exc)
        return
    planned = extractor.planned(cfg.weights, sha256, cfg.precision)
    if planned is None:
        log.info("weights %s: outside the lake's bucket, named by the features job (the PCA job checks)", cfg.weights)
        return
    refused = extractors.refusal(space, planned)
    if refused and not cfg.change_extractor:
        raise InvalidParam(*refused)
    if cfg.change_extractor and not refused:
        raise InvalidParam(
            "change_extractor",
            f"this run featurizes with {extractors.describe(planned)}, as the current space does "
            f"({'none yet' if space is None else space['space']}): nothing to change; unset change_extractor",
        )


@from_xcom
def ingest_batch(cfg: RunConfig) -> dict:
    if cfg.rerun:  # a repair: the batch's own stored photos, nothing from the landing folder
        return ingest.stored_batch(storage_for(cfg), cfg.batch_id)
    return ingest.ingest(Path(cfg.landing_dir), storage_for(cfg), cfg.batch_id)


@from_xcom
def has_work(cfg: RunConfig, report: dict) -> bool:
    """False (and the rest of the run is skipped, no cluster) when there is nothing to process. A run
    without new photos still runs the PCA step when the embedding space is behind or a refit is asked."""
    if report["files"] == 0:
        held = ", ".join(f"{n} in {b}" for b, n in sorted(report["already_held_by"].items())) or "none"
        pending = published.pca_pending(storage_for(cfg), cfg.pca_refit, cfg.pca_rule)
        if cfg.change_extractor:
            pending.insert(0, "change_extractor: every published batch is featurized again, then a new space")
        log.warning(
            "No new photos for batch %s in %s (already in published batches: %s; %d skipped, "
            "reasons in the manifest): %s.",
            cfg.batch_id,
            cfg.landing_dir,
            held,
            report["skipped"],
            f"the PCA step alone runs ({'; '.join(pending)})" if pending else "nothing to process, no cluster started",
        )
        return bool(pending)
    if cfg.rerun:
        log.warning("Re-running published batch %s from its %d stored photos (rerun).", cfg.batch_id, report["files"])
        return True
    if report["uploaded"] == 0 and not cfg.change_extractor and published.is_processed(storage_for(cfg), cfg.batch_id):
        log.warning("Batch %s is already processed and nothing new was uploaded: nothing to do.", cfg.batch_id)
        return False
    return True


@from_xcom
def stage_code(cfg: RunConfig) -> str:
    """Upload the jobs' bundle to code/<version>/ (once per version), and what the backend needs
    beside it; returns the code version."""
    storage = storage_for(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_bundle(Path(tmp))
        upload_missing(storage, layout.code_prefix(bundle.version), bundle.files)
    log.info("code %s staged at %s%s", bundle.version, storage.name, layout.code_prefix(bundle.version))
    backend_named(cfg.backend).stage(cfg, storage)
    return bundle.version


def brings_photos(report: dict) -> bool:
    """Whether the run has a batch of photos to featurize (else only the PCA step runs)."""
    return report["files"] > 0


@from_xcom
def plan(cfg: RunConfig, version: str, run_id: str, report: dict) -> dict:
    """The run's Spark jobs, once, and the backend's rendering of them (on EMR: the cluster and its steps)."""
    spark_jobs = jobs.plan_jobs(cfg, version, brings_photos(report))
    return {
        "jobs": [job.to_dict() for job in spark_jobs],
        **backend_named(cfg.backend).render(cfg, spark_jobs, version, run_id),
    }


@from_xcom
def publish_summary(cfg: RunConfig, report: dict, backend_result) -> dict:
    """The batch's figures and outputs, the space's, and the run report, which also goes beside the
    run's metrics.json (run_report.json); then the index pieces of the vectors this run added (fruits similar).
    backend_result: the XCom of the task the backend named (BackendTasks.result_task_id)."""
    backend = backend_named(cfg.backend)
    storage = storage_for(cfg)
    batch_id = cfg.batch_id if brings_photos(report) else None
    result = summary.read_summary(storage, batch_id)
    images, pca = result["images"], result["pca"]
    processed = {jobs.PCA_JOB: pca["n_images"], **({jobs.FEATURES_JOB: images["read"]} if images else {})}
    if cfg.change_extractor:  # every batch of the new space was featurized again: what the run paid for
        processed[jobs.FEATURES_JOB] = summary.photos_read(storage, published.current_space(storage) or {})
    run_report = {**backend.run_report(cfg, backend_result, processed), "images": processed}
    summary.write_run_report(storage, result["locations"]["metrics"], run_report)
    result["run_report"] = run_report
    built = vector_index.build_missing_pieces(storage, published.current_space(storage) or {})
    log.info("vector index: %d new piece(s) for the space's batches", len(built))
    if images:
        log.info(
            "batch %s: %s read, %s featurized, %s rejected %s",
            cfg.batch_id,
            images["read"],
            images["featurized"],
            images["rejected"],
            images["rejects_by_reason"],
        )
    log.info(
        "space %s%s: %s images, k=%s of %s dims, explained variance %.3f at its fit",
        pca["space"],
        f" (new: {pca['refit_reason']})" if pca["new_space"] else "",
        pca["n_images"],
        pca["k"],
        pca["input_dim"],
        pca["total_explained_variance"],
    )
    log.info("run:\n%s", format_report(run_report, backend.report_lines(run_report)))
    log.info("outputs:\n%s", summary.format_locations(result["locations"]))
    return result
