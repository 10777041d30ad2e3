"""The bodies of the DAG's tasks: each takes the run's config (a dict in XCom) and returns JSON."""
import dataclasses
import json
import logging
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from fruits.backends.emr import clusters
from fruits.config import run as config
from fruits.backends.emr import builders as emr
from fruits.lake import ingest
from fruits.backends import jobs
from fruits.lake import layout
from fruits.backends.local import runner as local_runner
from fruits.lake import published
from fruits.backends import run_report
from fruits.lake import summary
from fruits.backends.emr import preflight as preflight_checks
from fruits.config.run import PipelineConfig
from fruits.lake.storage import LocalStorage, S3Storage, Storage
from fruits_jobs.digests import file_digests
from fruits_jobs.bundle import LOCK, build_bundle, spark_jobs_dir

log = logging.getLogger(__name__)


def storage_for(cfg: PipelineConfig) -> Storage:
    if cfg.uses_lake_folder:
        return LocalStorage(Path(cfg.local_lake))
    return S3Storage(cfg.bucket, cfg.aws_conn_id)  # EMR, or the local backend on MinIO (compose)


def run_date(context) -> str:
    # A manual run in Airflow 3 may have no logical date; run_after always exists.
    when = context.get("logical_date") or context["dag_run"].run_after
    return when.strftime("%Y-%m-%d")


def validate_params(context) -> dict:
    cfg = config.resolve(context["params"], config.read_settings(), run_date(context))
    if not context["params"].get("batch_id"):  # named by the date: never reopen a published batch
        cfg = dataclasses.replace(cfg, batch_id=ingest.next_free_batch_id(storage_for(cfg), cfg.batch_id))
    log.info("run config: %s", json.dumps(cfg.to_dict(), indent=1))
    return cfg.to_dict()


def ingest_batch(cfg_dict: dict) -> dict:
    cfg = PipelineConfig.from_dict(cfg_dict)
    return ingest.ingest(Path(cfg.landing_dir), storage_for(cfg), cfg.batch_id)


def has_work(cfg_dict: dict, report: dict) -> bool:
    """False (and the rest of the run is skipped, no cluster) when there is nothing to process."""
    cfg = PipelineConfig.from_dict(cfg_dict)
    if report["files"] == 0:
        held = ", ".join(f"{n} in {b}" for b, n in sorted(report["already_held_by"].items())) or "none"
        log.warning("No new photos for batch %s in %s (already in published batches: %s; %d skipped, "
                    "reasons in the manifest): nothing to process, no cluster started.", cfg.batch_id,
                    cfg.landing_dir, held, report["skipped"])
        return False
    if report["uploaded"] == 0 and published.is_processed(storage_for(cfg), cfg.batch_id):
        log.warning("Batch %s is already processed and nothing new was uploaded: nothing to do.", cfg.batch_id)
        return False
    return True


def stage_code(cfg_dict: dict) -> str:
    """Upload the jobs' bundle to code/<version>/ (once per version), and a local weights file for
    the cluster to models/<sha256>.weights.h5 (once per content); returns the code version."""
    cfg = PipelineConfig.from_dict(cfg_dict)
    storage = storage_for(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_bundle(Path(tmp))
        upload_missing(storage, layout.code_prefix(bundle.version), bundle.files)
    log.info("code %s staged at %s%s", bundle.version, storage.name, layout.code_prefix(bundle.version))
    if cfg.wheelhouse:
        upload_missing(storage, wheels_prefix_of(cfg), {w.name: w for w in Path(cfg.wheelhouse).glob("*.whl")})
        log.info("wheelhouse %s staged at %s%s", cfg.wheelhouse, storage.name, wheels_prefix_of(cfg))
    if cfg.weights_file:
        key = cfg.weights[len(cfg.uri()):]
        if key not in storage.sizes(key):
            storage.upload_file(Path(cfg.weights_file), key)
        log.info("weights %s staged at %s", cfg.weights_file, cfg.weights)
    return bundle.version


def upload_missing(storage: Storage, prefix: str, files: dict) -> None:
    """Upload {name: local path} under prefix, but what is there already with the same size."""
    present = storage.sizes(prefix)
    for name, path in sorted(files.items()):
        if present.get(prefix + name) != path.stat().st_size:
            storage.upload_file(path, prefix + name)


def wheels_prefix_of(cfg: PipelineConfig) -> str:
    """Where this run's wheelhouse is staged: by the lock file's content, once per closure."""
    return layout.wheels_prefix(file_digests(spark_jobs_dir() / LOCK, "sha256")[0])


def preflight(cfg_dict: dict, version: str) -> None:
    """backend=emr: fail with every problem a cluster would hit, before one is created."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    cfg = PipelineConfig.from_dict(cfg_dict)
    hooks = {kind: AwsBaseHook(aws_conn_id=cfg.aws_conn_id, client_type=kind) for kind in ("s3", "iam", "ec2")}
    clients = preflight_checks.Clients(hooks["s3"].conn, hooks["iam"].conn, hooks["ec2"].conn,
                                       hooks["ec2"].conn_region_name)
    problems = preflight_checks.run_checks(cfg, clients, version)
    if problems:
        raise preflight_checks.PreflightFailed(
            "no cluster was started; change these first:\n" + "\n".join(f"  - {p}" for p in problems))
    log.info("pre-flight: bucket, weights, roles, subnet, instance types and code are ready")


def plan(cfg_dict: dict, version: str, run_id: str) -> dict:
    """The run's Spark jobs, once, and their EMR rendering (the cluster request and its steps)."""
    cfg = PipelineConfig.from_dict(cfg_dict)
    spark_jobs = jobs.plan_jobs(cfg, version)
    wheels = cfg.uri(wheels_prefix_of(cfg)) if cfg.wheelhouse else None
    return {"jobs": [job.to_dict() for job in spark_jobs],
            "job_flow": emr.job_flow_overrides(cfg, version, run_id, wheels),
            "steps": emr.spark_steps(spark_jobs, cfg.batch_id),
            "progress": {jobs.JOBS[0].name: cfg.uri(layout.progress_key(cfg.batch_id))}}


def add_steps(cfg_dict: dict, cluster_id: str, steps: list) -> dict:
    """The steps not yet on the cluster, in one AddJobFlowSteps call (a retry, or a reused cluster,
    keeps the steps an earlier try added); returns {job name: step id} for the sensors."""
    from airflow.providers.amazon.aws.hooks.emr import EmrHook

    cfg = PipelineConfig.from_dict(cfg_dict)
    step_ids = clusters.add_steps_once(EmrHook(aws_conn_id=cfg.aws_conn_id).conn, cluster_id, steps)
    log.info("steps of %s: %s", cluster_id, step_ids)
    return dict(zip([job.name for job in jobs.JOBS], step_ids, strict=True))


def run_locally(cfg_dict: dict, job_dicts: list) -> list:
    cfg = PipelineConfig.from_dict(cfg_dict)
    if cfg.uses_lake_folder:
        Path(cfg.local_lake).mkdir(parents=True, exist_ok=True)
    return local_runner.run_jobs([jobs.SparkJob.from_dict(d) for d in job_dicts], cfg.spark_master)


def emr_run_report(cfg: PipelineConfig, cluster_id: str, images: dict) -> dict:
    from airflow.providers.amazon.aws.hooks.emr import EmrHook

    hook = EmrHook(aws_conn_id=cfg.aws_conn_id)
    client = hook.conn
    groups = [g for page in client.get_paginator("list_instance_groups").paginate(ClusterId=cluster_id)
              for g in page["InstanceGroups"]]
    return run_report.emr_report(
        client.describe_cluster(ClusterId=cluster_id)["Cluster"], groups, clusters.list_steps(client, cluster_id),
        {job.name: emr.step_name(job.name, cfg.batch_id) for job in jobs.JOBS}, images,
        run_report.load_prices(), hook.conn_region_name, datetime.now(timezone.utc))


def publish_summary(cfg_dict: dict, backend_result) -> dict:
    """The batch's figures and outputs, and the run report, which also goes into the batch's
    metrics.json; backend_result: the cluster id (emr) or run_locally's result (local)."""
    cfg = PipelineConfig.from_dict(cfg_dict)
    storage = storage_for(cfg)
    result = summary.read_summary(storage, cfg.batch_id)
    images, pca = result["images"], result["pca"]
    processed = dict(zip([job.name for job in jobs.JOBS], (images["read"], pca["n_images"]), strict=True))
    report = emr_run_report(cfg, backend_result, processed) if cfg.backend == "emr" else \
        run_report.local_report(backend_result, processed)
    summary.add_run_report(storage, result["locations"]["metrics"], report)
    result["run_report"] = report
    log.info("batch %s: %s read, %s featurized, %s rejected %s", cfg.batch_id, images["read"],
             images["featurized"], images["rejected"], images["rejects_by_reason"])
    log.info("PCA on %s images: k=%s of %s dims, explained variance %.3f", pca["n_images"], pca["k"],
             pca["input_dim"], pca["total_explained_variance"])
    log.info("run:\n%s", run_report.format_report(report))
    log.info("outputs:\n%s", summary.format_locations(result["locations"]))
    return result
