"""The DAG's operators of its own: a cluster creator that a retry cannot make create twice, the EMR
step sensor that explains a failure in the task's log and stops what it watches when killed, and
the teardown that fences a batch whose publishing step the run gave up on (lake/leases.py)."""

from airflow.exceptions import AirflowException
from airflow.providers.amazon.aws.hooks.emr import EmrHook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.emr import EmrCreateJobFlowOperator, EmrTerminateJobFlowOperator
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor

from fruits.backends.emr.builders import RUN_TAG_KEYS
from fruits.backends.emr.clusters import live_cluster_of_run
from fruits.backends.watching import WatchesAJob, revoke_lease

LIVE_STEP_STATES = ["PENDING", "RUNNING"]


class CreateClusterOnce(EmrCreateJobFlowOperator):
    """EmrCreateJobFlowOperator whose retry reuses the live cluster an earlier try of the same DAG
    run created (found by name and by the run's tags: fruits.backends.emr.builders.run_tags) instead of paying for a
    second one; so it can retry like any task."""

    def execute(self, context):
        flow: dict = self.job_flow_overrides  # type: ignore[assignment]  # rendered from plan_jobs' XCom
        tags = {t["Key"]: t["Value"] for t in flow["Tags"] if t["Key"] in RUN_TAG_KEYS}
        found = live_cluster_of_run(self.hook.conn, flow["Name"], tags)
        if found:
            self.log.warning("reusing cluster %s: an earlier try of this run created it (tags %s)", found, tags)
            return found
        return super().execute(context)


class StepSensor(WatchesAJob, EmrStepSensor):
    """EmrStepSensor that, when its step fails, logs why (the step's FailureDetails, the last lines
    of its stderr from the cluster's LogUri, or the cluster's own StateChangeReason when it ended
    with errors: a bootstrap or provisioning failure, not the step's); and that, when its task is
    killed (run marked failed, task cleared or timed out), cancels the steps still live on its
    cluster: the killed one, and the ones queued after it, which would otherwise start on the
    missing output. The teardown still terminates the cluster."""

    template_fields = (*EmrStepSensor.template_fields, "progress_uris", "lease_uri")

    def __init__(self, *, job_name: str, progress_uris=None, lease_uri=None, **kwargs):
        super().__init__(**kwargs)
        self.job_name = job_name
        self.progress_uris = progress_uris  # {job: s3 URI of the progress its job writes}
        self.lease_uri = lease_uri  # the lease its job's commit publishes under (the publishing job only)

    def watched(self) -> str | None:
        return self.step_id

    def execute_complete(self, context, event=None):  # deferrable mode: the trigger saw the failure
        try:
            return super().execute_complete(context, event)
        except AirflowException as exc:  # the trigger's event has no FailureDetails: say them too
            self.fail_with_cause(exc, self.explain_failure(with_details=True))

    def explain_failure(self, with_details: bool = False) -> str:  # a poke's exception has the FailureDetails
        emr = EmrHook(aws_conn_id=self.aws_conn_id).conn
        cluster = emr.describe_cluster(ClusterId=self.job_flow_id)["Cluster"]
        status = cluster["Status"]
        if status["State"] in ("TERMINATING", "TERMINATED_WITH_ERRORS") and status.get("StateChangeReason", {}).get(
            "Code"
        ) not in ("USER_REQUEST", "ALL_STEPS_COMPLETED"):
            reason = status.get("StateChangeReason", {})
            return (
                f"cluster {self.job_flow_id} ended {status['State']}: {reason.get('Code')}: {reason.get('Message')}."
                f" This is the cluster's failure (bootstrap or provisioning), not the step's: the bootstrap "
                f"logs are under {cluster.get('LogUri')}{self.job_flow_id}/node/"
            )
        step = emr.describe_step(ClusterId=self.job_flow_id, StepId=self.step_id)["Step"]
        details = self.failure_message_from_response({"Step": step}) if with_details else None
        lines = [
            f"step {step.get('Name')} ({self.step_id}) on cluster {self.job_flow_id} is {step['Status']['State']}"
            + (f": {details}" if details else "")
        ]
        if cluster.get("LogUri"):
            lines.append(self._stderr_tail(cluster["LogUri"]))
        return "\n".join(lines)

    def _stderr_tail(self, log_uri: str) -> str:
        bucket, prefix = S3Hook.parse_s3_url(log_uri)  # EMR reports LogUri as s3n://
        key = f"{prefix.rstrip('/')}/{self.job_flow_id}/steps/{self.step_id}/stderr.gz"
        return self.stderr_tail(bucket, key, "the step's")

    def on_kill(self) -> None:
        emr = EmrHook(aws_conn_id=self.aws_conn_id).conn
        live = [s["Id"] for s in emr.list_steps(ClusterId=self.job_flow_id, StepStates=LIVE_STEP_STATES)["Steps"]]
        if live:
            # TERMINATE_PROCESS: a RUNNING step's process is killed, not only interrupted (EMR >= 5.28).
            emr.cancel_steps(ClusterId=self.job_flow_id, StepIds=live, StepCancellationOption="TERMINATE_PROCESS")
            self.log.warning("cancelled the live steps %s of cluster %s", live, self.job_flow_id)
        if self.lease_uri:  # a step may still finish before the teardown ends the cluster: it must not publish
            revoke_lease(self.lease_uri, self.aws_conn_id, f"{self.task_id} was stopped")
            self.log.warning("revoked %s: this run publishes nothing", self.lease_uri)


class TerminateAndFence(EmrTerminateJobFlowOperator):
    """The teardown: when the sensor of the publishing step did not succeed (failed, killed, or its
    worker died hard and never ran on_kill), revoke the batch's lease first, then end the cluster."""

    template_fields = (*EmrTerminateJobFlowOperator.template_fields, "lease_uri")

    def __init__(self, *, lease_uri, watcher_task_id: str, **kwargs):
        super().__init__(**kwargs)
        self.lease_uri = lease_uri
        self.watcher_task_id = watcher_task_id

    def execute(self, context):
        ti, run_id = context["ti"], context["run_id"]
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[self.watcher_task_id], run_ids=[run_id])
        state = states.get(run_id, {}).get(self.watcher_task_id)
        if state != "success":
            revoke_lease(self.lease_uri, self.aws_conn_id, f"{self.watcher_task_id} ended {state}")
            self.log.warning(
                "%s ended %s: revoked %s, this run publishes nothing", self.watcher_task_id, state, self.lease_uri
            )
        return super().execute(context)
