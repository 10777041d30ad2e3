"""What differs from one backend to another, and nothing else: where the bucket is, how the jobs are
staged, run and watched, and what the run report holds. The DAG and the task bodies (pipeline.py)
call these and never ask which backend runs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from airflow.sdk.bases.operator import BaseOperator
    from airflow.sdk.definitions.xcom_arg import XComArg

    from fruits.backends.jobs import SparkJob
    from fruits.config.run import EmrConfig, LocalConfig, RunConfig, ServerlessConfig
    from fruits.lake.storage import Storage


class BackendTasks(NamedTuple):
    """The DAG tasks a backend adds: where its branch starts, whose XCom holds the result that
    `run_report` reads, and the tasks publish_summary waits for."""

    entry: BaseOperator
    result_task_id: str
    done: list[BaseOperator]


class Backend(ABC):
    name: str  # the backend param's value (fruits.backends.BACKENDS)

    # ---- config: called by config.run.resolve, when the run's first task resolves its params ----

    @abstractmethod
    def bucket_and_root(self, settings: Mapping[str, Any]) -> tuple[str, str]:
        """The bucket's name and the root the jobs reach its keys under (s3://<bucket>/ or a folder)."""

    @abstractmethod
    def default_weights(self, bucket: str) -> str:
        """The weights when neither the param nor the setting names any."""

    def weights_for_jobs(self, weights: str, root: str) -> str:
        """The weights as the jobs will reach them (an s3:// URI may mean a folder here)."""
        return weights

    @abstractmethod
    def section(
        self, params: Mapping[str, Any], settings: Mapping[str, Any], bucket: str, weights: str
    ) -> tuple[EmrConfig | ServerlessConfig | LocalConfig, str]:
        """This backend's config section, and the weights again (it may stage a file elsewhere)."""

    # ---- run: called by the task bodies (pipeline.py) and the DAG ----

    def stage(self, cfg: RunConfig, storage: Storage) -> None:  # noqa: B027 (optional: most need nothing more)
        """What the backend needs in the bucket besides the code bundle (none by default)."""

    def weights_to_stage(self, cfg: RunConfig) -> str | None:
        """A file on this machine that stage() uploads as the run's weights (none by default)."""
        return None

    def render(self, cfg: RunConfig, jobs: list[SparkJob], version: str, run_id: str) -> dict:
        """The run's jobs in the backend's own terms, kept in plan_jobs' XCom (none by default)."""
        return {}

    @abstractmethod
    def add_tasks(self, cfg: XComArg, version: XComArg, plan: XComArg) -> BackendTasks:
        """Add the tasks that run and watch the jobs to the DAG being defined."""

    @abstractmethod
    def run_report(self, cfg: RunConfig, result: Any, images: dict[str, int]) -> dict:
        """What the run took (and cost): result is the XCom of BackendTasks.result_task_id."""

    def report_lines(self, report: dict) -> list[str]:
        """The backend's own lines of the run report: the first goes before the wall times, the rest after."""
        return []
