"""The backend-neutral job specs: what the Airflow side asks each job to do is what the job accepts."""

import dataclasses

import pytest

from fruits.backends import jobs
from fruits.config.run import LocalConfig
from fruits_jobs import bundle, features, pca

from airflow_fixtures import emr_run_config

CFG = emr_run_config()
LOCAL = dataclasses.replace(
    CFG,
    backend="local",
    root="/lake/",
    emr=None,
    local=LocalConfig(lake="/lake", storage="lake", spark_master="local[*]"),
)
PARSERS = {"extract_features": features.parse_args, "reduce_dimensions": pca.parse_args}


@pytest.mark.parametrize(
    "cfg", [CFG, dataclasses.replace(CFG, pca_k=12), dataclasses.replace(CFG, pca_refit="always"), LOCAL]
)
def test_every_job_accepts_the_arguments_the_dag_gives_it(cfg):
    planned = jobs.plan_jobs(cfg, "v1")
    assert [j.name for j in planned] == [d.name for d in jobs.JOBS] == list(PARSERS)
    assert [d.name for d in jobs.JOBS] == [jobs.FEATURES_JOB, jobs.PCA_JOB]
    for job in planned:
        args = PARSERS[job.name](list(job.args))  # the job's own argparse: exit 2 on a mismatch
        assert "--batch-id" not in job.args or args.batch_id == cfg.batch_id
    pca_args = pca.parse_args(list(planned[1].args))
    assert (pca_args.k, pca_args.refit) == (cfg.pca_k, cfg.pca_refit)
    # the PCA keeps the lake's one embedding space under pca/, whatever the run's batch (issue 20)
    assert pca_args.output == cfg.uri("pca/") and pca_args.features == cfg.uri("features/")
    assert (pca_args.k, pca_args.variance) == (cfg.pca_rule["k"], cfg.pca_rule["variance"])


def test_a_run_without_photos_plans_the_pca_alone():
    """No new photos, but the space lacks a published batch or a refit is asked: the PCA step only."""
    (alone,) = jobs.plan_jobs(CFG, "v1", with_photos=False)
    assert alone.name == jobs.PCA_JOB
    assert alone == jobs.plan_jobs(CFG, "v1")[1]


def test_every_job_runs_a_bundled_entrypoint_with_the_bundled_package():
    assert sorted(d.entrypoint for d in jobs.JOBS) == sorted(bundle.ENTRYPOINTS)
    for job in jobs.plan_jobs(CFG, "v1"):
        assert job.entrypoint.startswith("s3://fruits-test/code/v1/")
        assert job.py_files == ("s3://fruits-test/code/v1/" + bundle.ZIP_NAME,)
        assert jobs.SparkJob.from_dict(job.to_dict()) == job  # through XCom and back


def test_submit_args_put_the_entrypoint_after_the_options_and_before_the_job_args():
    job = jobs.SparkJob(
        "j", "/code/j.py", ("/code/a.zip", "/code/b.zip"), ("--x", "1"), {"spark.b": "2", "spark.a": "1"}, 60
    )
    assert jobs.submit_args(job) == [
        "--py-files",
        "/code/a.zip,/code/b.zip",
        "--conf",
        "spark.a=1",
        "--conf",
        "spark.b=2",
        "/code/j.py",
        "--x",
        "1",
    ]
