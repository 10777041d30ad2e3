"""The DAG's one operator of its own: the EMR step sensor that stops what it watches when it is killed."""
from airflow.providers.amazon.aws.hooks.emr import EmrHook
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor

LIVE_STEP_STATES = ["PENDING", "RUNNING"]


class StepSensor(EmrStepSensor):
    """EmrStepSensor that, when its task is killed (run marked failed, task cleared or timed out),
    cancels the steps still live on its cluster: the killed one, and the ones queued after it, which
    would otherwise start on the missing output. The teardown still terminates the cluster."""

    def on_kill(self) -> None:
        emr = EmrHook(aws_conn_id=self.aws_conn_id).conn
        live = [s["Id"] for s in emr.list_steps(ClusterId=self.job_flow_id, StepStates=LIVE_STEP_STATES)["Steps"]]
        if live:
            # TERMINATE_PROCESS: a RUNNING step's process is killed, not only interrupted (EMR >= 5.28).
            emr.cancel_steps(ClusterId=self.job_flow_id, StepIds=live, StepCancellationOption="TERMINATE_PROCESS")
            self.log.warning("cancelled the live steps %s of cluster %s", live, self.job_flow_id)
