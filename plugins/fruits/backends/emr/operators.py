"""The DAG's operators of its own: a cluster creator that a retry cannot make create twice, the EMR
step sensor that explains a failure in the task's log and stops what it watches when killed, and
the teardown that fences a batch whose publishing step the run gave up on (lake/leases.py)."""

import gzip
import json
import time

from airflow.exceptions import AirflowException
from airflow.providers.amazon.aws.hooks.emr import EmrHook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.emr import EmrCreateJobFlowOperator, EmrTerminateJobFlowOperator
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from botocore.exceptions import BotoCoreError, ClientError

from fruits.backends.emr.aws import S3_DENIED, S3_NOT_FOUND, aws_error_code
from fruits.backends.emr.builders import RUN_TAG_KEYS
from fruits.backends.emr.clusters import live_cluster_of_run
from fruits.backends.jobs import is_cause
from fruits.lake import leases
from fruits.lake.storage import S3Storage
from fruits_jobs import layout
from fruits_jobs.progress import format_line

LIVE_STEP_STATES = ["PENDING", "RUNNING"]
STDERR_LINES = 50
# EMR copies a step's logs to LogUri every few minutes (EMR Management Guide, "View log files
# archived to Amazon S3"): wait a little for stderr.gz, then say where it will be.
STDERR_WAIT_S = 300
STDERR_POLL_S = 20


def revoke_lease(lease_uri: str, aws_conn_id: str | None, reason: str) -> None:
    """The batch's lease without a token: the step's commit, whenever it lands, publishes nothing
    (nor does its Delta commit: leases.revoke fences the tables too)."""
    bucket, key = S3Hook.parse_s3_url(lease_uri)
    leases.revoke(S3Storage(bucket, aws_conn_id), layout.batch_of_lease(key), reason)


def tail(data: bytes, lines: int = STDERR_LINES) -> str:
    return "\n".join(gzip.decompress(data).decode("utf-8", "replace").splitlines()[-lines:])


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


class StepSensor(EmrStepSensor):
    """EmrStepSensor that, when its step fails, logs why (the step's FailureDetails, the last lines
    of its stderr from the cluster's LogUri, or the cluster's own StateChangeReason when it ended
    with errors: a bootstrap or provisioning failure, not the step's); and that, when its task is
    killed (run marked failed, task cleared or timed out), cancels the steps still live on its
    cluster: the killed one, and the ones queued after it, which would otherwise start on the
    missing output. The teardown still terminates the cluster."""

    stderr_wait_s = STDERR_WAIT_S
    template_fields = (*EmrStepSensor.template_fields, "progress_uris", "lease_uri")

    def __init__(self, *, job_name: str, progress_uris=None, lease_uri=None, **kwargs):
        super().__init__(**kwargs)
        self.job_name = job_name
        self.progress_uris = progress_uris  # {job: s3 URI of the progress its job writes}
        self.lease_uri = lease_uri  # the lease its job's commit publishes under (the publishing job only)

    def execute(self, context):
        if not self.step_id:  # the run did not plan this job (a run without photos: the PCA alone)
            self.log.info("%s: not part of this run", self.job_name)
            return None
        return super().execute(context)

    def poke(self, context):
        try:
            done = super().poke(context)
        except AirflowException as exc:  # its message has the step's FailureDetails: add what it lacks
            self.fail_with_cause(exc, self.explain_failure(with_details=False))
        if not done:
            self.log_progress()
        return done

    def log_progress(self) -> None:
        """The job's own progress (images done, rate, time left), when it writes one. Only for the log:
        a progress file that is missing (the step is starting), unreadable or half-written never fails
        the sensor, which pokes again."""
        uri = (self.progress_uris or {}).get(self.job_name)
        if not uri:
            return
        bucket, key = S3Hook.parse_s3_url(uri)
        try:
            body = S3Hook(aws_conn_id=self.aws_conn_id).conn.get_object(Bucket=bucket, Key=key)["Body"].read()
            line = format_line(json.loads(body))
        except ClientError as exc:
            code = aws_error_code(exc)
            if code in S3_NOT_FOUND:
                self.log.info(
                    "%s: no progress yet (the step is starting, or has not reached its model pass)", self.job_name
                )
            elif code in S3_DENIED:  # S3's answer for a missing key to a caller who may not list the bucket
                self.log.warning(
                    "%s: no progress to show: %s answers %s (missing, or not readable by this role: the stack's "
                    "AirflowPolicy grants s3:ListBucket on the bucket and s3:GetObject on it)",
                    self.job_name,
                    uri,
                    code,
                )
            else:
                self.log.warning("%s: no progress to show: %s cannot be read (%s)", self.job_name, uri, code)
        except (BotoCoreError, ValueError, KeyError, TypeError) as exc:  # no answer; half-written; not a progress
            self.log.warning("%s: no progress to show: %s is unreadable (%r)", self.job_name, uri, exc)
        else:
            self.log.info("%s: %s", self.job_name, line)

    def execute_complete(self, context, event=None):  # deferrable mode: the trigger saw the failure
        try:
            return super().execute_complete(context, event)
        except AirflowException as exc:  # the trigger's event has no FailureDetails: say them too
            self.fail_with_cause(exc, self.explain_failure(with_details=True))

    def fail_with_cause(self, exc: AirflowException, explanation: str):
        """Log why, and fail with the line of the step's stderr that says it (the task's failure message)."""
        self.log.error("%s", explanation)
        cause = next((line for line in reversed(explanation.splitlines()) if is_cause(line)), None)
        if cause:
            raise AirflowException(f"{exc}; {cause}") from exc
        raise exc

    def explain_failure(self, with_details: bool) -> str:
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
        s3 = S3Hook(aws_conn_id=self.aws_conn_id).conn
        deadline = time.monotonic() + self.stderr_wait_s
        while True:
            try:
                data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                return f"last {STDERR_LINES} lines of s3://{bucket}/{key}:\n{tail(data)}"
            except ClientError as exc:
                if aws_error_code(exc) not in S3_NOT_FOUND or time.monotonic() >= deadline:
                    return f"the step's stderr is not in S3 yet; EMR copies it within minutes to s3://{bucket}/{key}"
            time.sleep(STDERR_POLL_S)

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
