"""A retry asks EMR for nothing twice: the live cluster of a run is found again by its tags, and steps
already on it are kept (fruits/clusters.py), on moto's EMR."""

import boto3
import pytest
from moto.emr.models import emr_backends

from fruits.backends.emr import clusters

from airflow_fixtures import ACCOUNT, REGION

PLANNED = [{"Name": "extract_features b1"}, {"Name": "reduce_dimensions b1"}]


def summary(name, state, step_id):
    return {"Name": name, "Id": step_id, "Status": {"State": state}}


@pytest.mark.parametrize(
    "existing, kept, added",
    [
        ([], {}, ["extract_features b1", "reduce_dimensions b1"]),
        # newest first, as ListSteps returns them
        (
            [summary("reduce_dimensions b1", "PENDING", "s-2"), summary("extract_features b1", "RUNNING", "s-1")],
            {"extract_features b1": "s-1", "reduce_dimensions b1": "s-2"},
            [],
        ),
        # features done, PCA failed: only PCA again
        (
            [summary("reduce_dimensions b1", "FAILED", "s-2"), summary("extract_features b1", "COMPLETED", "s-1")],
            {"extract_features b1": "s-1"},
            ["reduce_dimensions b1"],
        ),
        # features failed (PCA cancelled with it): both again, even if an older try completed PCA
        (
            [
                summary("reduce_dimensions b1", "CANCELLED", "s-4"),
                summary("extract_features b1", "FAILED", "s-3"),
                summary("reduce_dimensions b1", "COMPLETED", "s-2"),
                summary("extract_features b1", "COMPLETED", "s-1"),
            ],
            {},
            ["extract_features b1", "reduce_dimensions b1"],
        ),
        # a newer try of features is live: kept, and the PCA after it must be added again
        (
            [
                summary("extract_features b1", "PENDING", "s-3"),
                summary("reduce_dimensions b1", "CANCELLED", "s-2"),
                summary("extract_features b1", "FAILED", "s-1"),
            ],
            {"extract_features b1": "s-3"},
            ["reduce_dimensions b1"],
        ),
    ],
)
def test_steps_to_add_keeps_live_or_done_steps_and_adds_from_the_first_missing(existing, kept, added):
    got_kept, to_add = clusters.steps_to_add(existing, PLANNED)
    assert got_kept == kept and [s["Name"] for s in to_add] == added


def new_cluster(emr, name="fruits-b1", run="run-1", project="fruits"):
    return emr.run_job_flow(
        Name=name,
        ReleaseLabel="emr-7.12.0",
        JobFlowRole="fruits-emr-ec2-role",
        ServiceRole="fruits-emr-service-role",
        Instances={"InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True, "MasterInstanceType": "m5.xlarge"},
        Tags=[
            {"Key": "project", "Value": project},
            {"Key": "dag_run_id", "Value": run},
            {"Key": "batch_id", "Value": "b1"},
        ],
    )["JobFlowId"]


def test_the_live_cluster_of_the_run_is_found_by_name_and_tags(aws):
    emr = boto3.client("emr", region_name=REGION)
    tags = {"project": "fruits", "dag_run_id": "run-1", "batch_id": "b1"}
    assert clusters.live_cluster_of_run(emr, "fruits-b1", tags) is None
    ended = new_cluster(emr)
    emr.terminate_job_flows(JobFlowIds=[ended])
    new_cluster(emr, run="run-0")  # an earlier run of the same batch
    new_cluster(emr, name="fruits-b2")  # same run tag, another name: not looked at
    assert clusters.live_cluster_of_run(emr, "fruits-b1", tags) is None
    mine = new_cluster(emr)
    assert clusters.live_cluster_of_run(emr, "fruits-b1", tags) == mine


def test_adding_steps_again_adds_only_what_the_cluster_lacks(aws):
    emr = boto3.client("emr", region_name=REGION)
    cluster = new_cluster(emr)
    steps = [
        {
            "Name": s["Name"],
            "ActionOnFailure": "CANCEL_AND_WAIT",
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["true"]},
        }
        for s in PLANNED
    ]
    first = clusters.add_steps_once(emr, cluster, steps)
    assert clusters.add_steps_once(emr, cluster, steps) == first  # a retry adds nothing
    assert len(emr.list_steps(ClusterId=cluster)["Steps"]) == 2
    # the features step completed and PCA failed: a retry adds PCA only
    features, pca = (s for s in emr_backends[ACCOUNT][REGION].clusters[cluster].steps)
    features.state, pca.state = "COMPLETED", "FAILED"
    again = clusters.add_steps_once(emr, cluster, steps)
    assert again[0] == first[0] and again[1] not in first
    assert len(emr.list_steps(ClusterId=cluster)["Steps"]) == 3
