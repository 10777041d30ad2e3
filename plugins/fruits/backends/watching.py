"""What the sensors of the AWS backends share (emr's StepSensor, emr_serverless' JobRunSensor): the job's
progress in the task log on each poke, a failed job's stderr tail from the bucket, the line that says
why as the task's failure, and the lease a stopped publishing job must not publish under."""

import gzip
import json
import time

from airflow.exceptions import AirflowException
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from botocore.exceptions import BotoCoreError, ClientError

from fruits.backends.emr.aws import S3_DENIED, S3_NOT_FOUND, aws_error_code
from fruits.backends.jobs import is_cause
from fruits.lake import leases
from fruits.lake.storage import S3Storage
from fruits_jobs import layout
from fruits_jobs.progress import format_line

STDERR_LINES = 50
# Both services copy a job's logs to S3 every few minutes and at its end (EMR Management Guide, "View
# log files archived to Amazon S3"; EMR Serverless User Guide, "Storing logs"): wait a little for
# stderr.gz, then say where it will be.
STDERR_WAIT_S = 300
STDERR_POLL_S = 20


def revoke_lease(lease_uri: str, aws_conn_id: str | None, reason: str) -> None:
    """The batch's lease without a token: the job's commit, whenever it lands, publishes nothing
    (nor does its Delta commit: leases.revoke fences the tables too)."""
    bucket, key = S3Hook.parse_s3_url(lease_uri)
    leases.revoke(S3Storage(bucket, aws_conn_id), layout.batch_of_lease(key), reason)


def tail(data: bytes, lines: int = STDERR_LINES) -> str:
    return "\n".join(gzip.decompress(data).decode("utf-8", "replace").splitlines()[-lines:])


class WatchesAJob:
    """Mixed in before a provider's sensor, which has aws_conn_id and log; the sensor adds job_name,
    progress_uris ({job: s3 URI of its progress}), watched() and explain_failure()."""

    stderr_wait_s = STDERR_WAIT_S
    job_name: str
    progress_uris: dict | None
    aws_conn_id: str | None

    def watched(self) -> str | None:
        """The id of what the sensor watches (None: the run did not plan its job)."""
        raise NotImplementedError

    def explain_failure(self) -> str:
        """Why the job failed, for the task's log: its state, its stderr's last lines."""
        raise NotImplementedError

    def execute(self, context):
        if not self.watched():  # the run did not plan this job (a run without photos: the PCA alone)
            self.log.info("%s: not part of this run", self.job_name)  # type: ignore[attr-defined]
            return None
        return super().execute(context)  # type: ignore[misc]

    def poke(self, context):
        try:
            done = super().poke(context)  # type: ignore[misc]  # the provider's: raises on a failed job
        except AirflowException as exc:  # its message says the state: add what it lacks
            self.fail_with_cause(exc, self.explain_failure())
        if not done:
            self.log_progress()
        return done

    def log_progress(self) -> None:
        """The job's own progress (images done, rate, time left), when it writes one. Only for the log:
        a progress file that is missing (the job is starting), unreadable or half-written never fails
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
                self.log.info(  # type: ignore[attr-defined]
                    "%s: no progress yet (the job is starting, or has not reached its model pass)", self.job_name
                )
            elif code in S3_DENIED:  # S3's answer for a missing key to a caller who may not list the bucket
                self.log.warning(  # type: ignore[attr-defined]
                    "%s: no progress to show: %s answers %s (missing, or not readable by this role: the stack's "
                    "AirflowPolicy grants s3:ListBucket on the bucket and s3:GetObject on it)",
                    self.job_name,
                    uri,
                    code,
                )
            else:
                self.log.warning("%s: no progress to show: %s cannot be read (%s)", self.job_name, uri, code)  # type: ignore[attr-defined]
        except (BotoCoreError, ValueError, KeyError, TypeError) as exc:  # no answer; half-written; not a progress
            self.log.warning("%s: no progress to show: %s is unreadable (%r)", self.job_name, uri, exc)  # type: ignore[attr-defined]
        else:
            self.log.info("%s: %s", self.job_name, line)  # type: ignore[attr-defined]

    def fail_with_cause(self, exc: AirflowException, explanation: str):
        """Log why, and fail with the line of the job's stderr that says it (the task's failure message)."""
        self.log.error("%s", explanation)  # type: ignore[attr-defined]
        cause = next((line for line in reversed(explanation.splitlines()) if is_cause(line)), None)
        if cause:
            raise AirflowException(f"{exc}; {cause}") from exc
        raise exc

    def stderr_tail(self, bucket: str, key: str, who: str) -> str:
        """The last lines of a gzipped stderr in the bucket, waiting a little for the service to copy it
        there; who: the job's kind, for the message (the step's, the job run's)."""
        s3 = S3Hook(aws_conn_id=self.aws_conn_id).conn
        deadline = time.monotonic() + self.stderr_wait_s
        while True:
            try:
                data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                return f"last {STDERR_LINES} lines of s3://{bucket}/{key}:\n{tail(data)}"
            except ClientError as exc:
                if aws_error_code(exc) not in S3_NOT_FOUND or time.monotonic() >= deadline:
                    return f"{who} stderr is not in S3 yet; it is copied there within minutes: s3://{bucket}/{key}"
            time.sleep(STDERR_POLL_S)
