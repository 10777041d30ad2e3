"""What a run took: wall times and images per second, whatever the backend; each backend adds its
own lines (emr/report.py: the cluster and its cost). Pure."""

from datetime import datetime


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 1)


def per_second(images: int | None, seconds: float | None) -> float | None:
    return round(images / seconds, 1) if images is not None and seconds else None


def local_report(runs: list[dict], images: dict[str, int]) -> dict:
    """runs: run_locally's [{"job", "wall_s", ...}]; images: job -> images it processed."""
    wall = {r["job"]: r["wall_s"] for r in runs}
    return {
        "backend": "local",
        "wall_s": {**wall, "total": round(sum(wall.values()), 1)},
        "images_per_s": {job: per_second(images.get(job), s) for job, s in wall.items()},
    }


def format_report(report: dict, backend_lines: list[str]) -> str:
    """The report as the few lines a person reads in the task log."""
    return "\n".join(
        [
            *backend_lines[:1],
            f"  {'wall time':<15} " + ", ".join(f"{k} {v} s" for k, v in report["wall_s"].items()),
            f"  {'images/s':<15} " + ", ".join(f"{k} {v}" for k, v in report["images_per_s"].items()),
            *backend_lines[1:],
        ]
    )
