"""Finding what an earlier try of this DAG run already asked EMR for, so a retry asks for nothing twice.

Pure boto3 (an EMR client is passed in): the operators and tasks decide when to ask.
"""

from botocore.exceptions import ClientError

from fruits.backends.emr.aws import aws_error_code

LIVE_CLUSTER_STATES = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]
# A step in these states will still produce (or has produced) its output: adding it again would run
# the job twice. FAILED, CANCELLED and INTERRUPTED steps produced nothing and are added anew.
REUSABLE_STEP_STATES = frozenset({"PENDING", "RUNNING", "COMPLETED"})


def live_cluster_of_run(emr, name: str, tags: dict[str, str]) -> str | None:
    """The id of a live cluster called name that carries every tag in tags, or None.

    ListClusters returns no tags, so candidates are narrowed by name first, then described (which
    the Airflow role may do only on clusters of its project: another project's cluster of the same
    name is skipped, not an error)."""
    for page in emr.get_paginator("list_clusters").paginate(ClusterStates=LIVE_CLUSTER_STATES):
        for summary in page["Clusters"]:
            if summary["Name"] != name:
                continue
            try:
                cluster = emr.describe_cluster(ClusterId=summary["Id"])["Cluster"]
            except ClientError as exc:
                if aws_error_code(exc) == "AccessDeniedException":
                    continue
                raise
            found = {t["Key"]: t["Value"] for t in cluster.get("Tags", [])}
            if all(found.get(key) == value for key, value in tags.items()):
                return summary["Id"]
    return None


def steps_to_add(existing: list[dict], planned: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """(name -> id of the existing steps to keep, the planned steps still to add).

    existing: the cluster's ListSteps summaries, newest first (the API's order); planned: the run's
    steps in order. The newest step of each name is kept while it is pending, running or completed;
    from the first planned step without such a step on, all are added (a later step reads the output
    of the ones before it)."""
    newest: dict[str, dict] = {}
    for step in existing:
        newest.setdefault(step["Name"], step)
    kept: dict[str, str] = {}
    for i, step in enumerate(planned):
        found = newest.get(step["Name"])
        if found is None or found["Status"]["State"] not in REUSABLE_STEP_STATES:
            return kept, planned[i:]
        kept[step["Name"]] = found["Id"]
    return kept, []


def list_steps(emr, cluster_id: str) -> list[dict]:
    """Every step of the cluster, newest first (ListSteps' order), all pages."""
    return [s for page in emr.get_paginator("list_steps").paginate(ClusterId=cluster_id) for s in page["Steps"]]


def add_steps_once(emr, cluster_id: str, planned: list[dict]) -> list[str]:
    """Add the planned steps the cluster does not already run or ran, in one AddJobFlowSteps call;
    returns the step id of each planned step, in order."""
    kept, to_add = steps_to_add(list_steps(emr, cluster_id), planned)
    added = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=to_add)["StepIds"] if to_add else []
    ids = {**kept, **dict(zip([s["Name"] for s in to_add], added, strict=True))}
    return [ids[step["Name"]] for step in planned]
