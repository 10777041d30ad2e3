"""What an EMR Serverless run took and cost: its job runs, their execution times and the billed
resources GetJobRun reports (billedResourceUtilization), priced from serverless_prices.json. Pure:
the AWS answers are passed in."""

import json
from collections.abc import Mapping
from pathlib import Path

from fruits.backends.run_report import per_second

PRICES_FILE = Path(__file__).with_name("serverless_prices.json")
BILLED = {"vCPUHour": "vcpu_hour", "memoryGBHour": "memory_gb_hour", "storageGBHour": "storage_gb_hour"}


def load_prices(path: Path = PRICES_FILE) -> dict:
    return json.loads(Path(path).read_text())


def billed(job_runs: Mapping[str, dict | None]) -> dict[str, float]:
    """The run's billed resources: each job run's billedResourceUtilization, summed."""
    runs = [run.get("billedResourceUtilization", {}) for run in job_runs.values() if run]
    return {ours: round(sum(run.get(theirs, 0.0) for run in runs), 6) for theirs, ours in BILLED.items()}


def estimate_cost(used: dict[str, float], prices: dict, region: str, images: int | None) -> dict:
    """The billed resources at the region's list prices (EMR Serverless bills per second what the
    workers were given, from their start to their release, with a one-minute minimum)."""
    rates = prices["regions"].get(region)
    basis = {"prices": f"{prices['source']}; as of {prices['as_of']}", "region": region}
    if rates is None:
        return {
            **basis,
            "run_usd": None,
            "per_1000_images_usd": None,
            "missing": f"no price for EMR Serverless in {region} in {PRICES_FILE.name}: add the row",
        }
    run = sum(used[name] * rates[name] for name in BILLED.values())
    return {
        **basis,
        "run_usd": round(run, 4),
        "per_1000_images_usd": round(1000 * run / images, 4) if images else None,
    }


def serverless_report(
    application: dict, job_runs: dict[str, dict | None], images: dict[str, int], prices: dict, region: str
) -> dict:
    """application: GetApplication's; job_runs: job -> GetJobRun's jobRun (None: the run did not plan
    it); images: job -> images it processed."""
    ran = {job: run for job, run in job_runs.items() if run}
    wall = {job: run.get("totalExecutionDurationSeconds") for job, run in ran.items()}
    used = billed(ran)
    return {
        "backend": "emr_serverless",
        "application_id": application["applicationId"],
        "release": application.get("releaseLabel"),
        "job_runs": {job: {"id": run["jobRunId"], "state": run["state"]} for job, run in ran.items()},
        "wall_s": {**wall, "total": sum(s for s in wall.values() if s is not None)},
        "images_per_s": {job: per_second(images.get(job), s) for job, s in wall.items()},
        "billed": used,
        "cost": estimate_cost(used, prices, region, images.get(next(iter(ran), ""))),
    }


def serverless_lines(report: dict) -> list[str]:
    """The application line (first) and the cost line (after the wall times)."""
    runs = ", ".join(f"{job} {run['id']} {run['state']}" for job, run in report["job_runs"].items())
    cost, used = report["cost"], report["billed"]
    return [
        f"  {'application':<15} {report['application_id']} ({report['release']}): {runs}",
        f"  {'cost (est.)':<15} "
        + (
            f"${cost['run_usd']} per run, ${cost['per_1000_images_usd']} per 1,000 images "
            f"({used['vcpu_hour']} vCPU-h, {used['memory_gb_hour']} GB-h, {used['storage_gb_hour']} storage GB-h "
            f"billed; {cost['region']} list prices)"
            if cost["run_usd"] is not None
            else cost["missing"]
        ),
    ]
