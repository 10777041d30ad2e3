"""The EMR Serverless branch's operators: the provider's start operator, made so that a retry reuses its
DAG run's live job run; the provider's job sensor, with the job's progress, a failure's driver stderr
tail, and a kill that cancels its job run (and fences the batch when the job publishes it)."""

from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook
from airflow.providers.amazon.aws.operators.emr import EmrServerlessStartJobOperator
from airflow.providers.amazon.aws.sensors.emr import EmrServerlessJobSensor

from fruits.backends.emr_serverless.builders import driver_stderr_key
from fruits.backends.watching import WatchesAJob, revoke_lease

LIVE = sorted(EmrServerlessHook.JOB_INTERMEDIATE_STATES)  # SUBMITTED, PENDING, SCHEDULED, RUNNING


def live_job_run(client, application_id: str, name: str) -> str | None:
    """The id of a live job run of that name on the application (a DAG run's job runs are named by
    builders.job_run_name), else None."""
    pages = client.get_paginator("list_job_runs").paginate(applicationId=application_id, states=LIVE)
    return next((run["id"] for page in pages for run in page["jobRuns"] if run["name"] == name), None)


def cancel_if_live(client, application_id: str, job_run_id: str) -> str:
    """Cancel a job run that has not ended; its state as it was."""
    state = client.get_job_run(applicationId=application_id, jobRunId=job_run_id)["jobRun"]["state"]
    if state in LIVE:
        client.cancel_job_run(applicationId=application_id, jobRunId=job_run_id)
    return state


class StartJobRunOnce(EmrServerlessStartJobOperator):
    """The provider's operator for one of the run's jobs (job_run: builders.job_run, from plan_jobs'
    XCom; None when the run did not plan the job); it returns the job run's id without waiting for it
    (the sensor waits). A retry reuses the live job run an earlier try of the same DAG run started."""

    template_fields = (*EmrServerlessStartJobOperator.template_fields, "job_run")

    def __init__(self, *, job_name: str, job_run, **kwargs):
        super().__init__(job_driver={}, wait_for_completion=False, **kwargs)
        self.job_name = job_name
        self.job_run = job_run

    def execute(self, context, event=None):
        if not self.job_run:
            self.log.info("%s: not part of this run", self.job_name)
            return None
        run = self.job_run
        self.name, self.job_driver = run["name"], run["job_driver"]
        self.configuration_overrides, self.config = run["configuration_overrides"], dict(run["config"])
        found = live_job_run(self.hook.conn, self.application_id, self.name)
        if found:
            self.log.warning("reusing job run %s (%s): an earlier try of this run started it", found, self.name)
            self.job_id = found
            return found
        return super().execute(context, event)


class JobRunSensor(WatchesAJob, EmrServerlessJobSensor):
    """The provider's job sensor that shows the job's progress on each poke; on a failed job run logs
    its stateDetails and its driver's stderr tail and fails with the line that says why; and, killed
    (run marked failed, task cleared or timed out), cancels its job run and, for the job that
    publishes the batch, revokes the lease its commit would publish under."""

    template_fields = (*EmrServerlessJobSensor.template_fields, "progress_uris", "lease_uri", "bucket")

    def __init__(self, *, job_name: str, bucket, progress_uris=None, lease_uri=None, **kwargs):
        super().__init__(**kwargs)
        self.job_name = job_name
        self.bucket = bucket  # where the job runs' logs are (builders.configuration_overrides)
        self.progress_uris = progress_uris
        self.lease_uri = lease_uri

    def watched(self) -> str | None:
        return self.job_run_id

    def explain_failure(self) -> str:
        run = self.hook.conn.get_job_run(applicationId=self.application_id, jobRunId=self.job_run_id)["jobRun"]
        key = driver_stderr_key(self.application_id, self.job_run_id)
        return "\n".join(
            [
                f"job run {run.get('name')} ({self.job_run_id}) on application {self.application_id} is "
                f"{run['state']}: {run.get('stateDetails')}",
                self.stderr_tail(self.bucket, key, "the driver's"),
            ]
        )

    def on_kill(self) -> None:
        if self.job_run_id:
            state = cancel_if_live(self.hook.conn, self.application_id, self.job_run_id)
            self.log.warning("job run %s was %s: cancelled if it had not ended", self.job_run_id, state)
        if self.lease_uri:  # a job run may still commit before its cancel lands: it must not publish
            revoke_lease(self.lease_uri, self.aws_conn_id, f"{self.task_id} was stopped")
            self.log.warning("revoked %s: this run publishes nothing", self.lease_uri)
