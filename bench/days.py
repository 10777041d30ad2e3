"""`make check-days`: the whole DAG, day after day, on held-out photos; what a day and a query read.

    python bench/days.py [--days 12] [--photos 6] [--shared ../shared]

Runs `airflow dags test fruits_pipeline <date>` once a day for `--days` days on the embedded default
(local backend, a temp lake, SQLite), each day's landing folder a few Fruits-360 photos of classes
no earlier day had, plus one photo of yesterday's (already held: ingest must skip it). After each
day it reads what the next day would read: the held-photo catalog and its pieces (ingest) and the
vector index's catalog and pieces (`fruits similar`; the space is kept after the first day,
pca_refit=never, so its index grows in tiers), and checks, after the twelfth day, at most
ceil(log2 12) + 1 = 5 files each; then `fruits similar` on a photo of the last day finds it first.
A check, not a test: about a minute a day on 2 cores (issue 29's "twelve daily runs").
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "spark_jobs")]

from fruits.lake import held_index, published, vector_index  # noqa: E402
from fruits.lake.storage import LocalStorage  # noqa: E402


def landing_for(day: int, classes: list[Path], photos: int, out: Path, yesterday: Path | None) -> list[Path]:
    """The day's landing folder: `photos` photos of two classes no other day has, and one of yesterday's."""
    placed = []
    for cls in classes[2 * (day - 1) : 2 * day]:
        (out / "Test" / cls.name).mkdir(parents=True)
        for photo in sorted(cls.iterdir())[: photos // 2]:
            shutil.copyfile(photo, out / "Test" / cls.name / photo.name)
            placed.append(out / "Test" / cls.name / photo.name)
    if yesterday is not None:
        (out / "Test" / yesterday.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(yesterday, out / "Test" / yesterday.parent.name / yesterday.name)
    return placed


def run_day(env: dict, landing: Path, logical: date, weights: str, refit: str) -> None:
    conf = json.dumps({"backend": "local", "landing_dir": str(landing), "weights": weights, "pca_refit": refit})
    cmd = [str(REPO / ".venv/bin/airflow"), "dags", "test", "fruits_pipeline", logical.isoformat(), "-c", conf]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0 or " ERROR " in done.stdout + done.stderr:
        tail = (done.stdout + done.stderr)[-3000:]
        raise SystemExit(f"day {logical}: the DAG run failed or logged an ERROR:\n{tail}")


def files_read(storage: LocalStorage) -> tuple[int, int]:
    """(held-photo files ingest reads: the catalog and its pieces; index files a search opens: the
    catalog and each piece's graph and rows)."""
    held = held_index.read_catalog(storage) or {"pieces": []}
    space = published.current_space(storage)
    index = vector_index.read_catalog(storage, space) if space else {"pieces": []}
    return 1 + len(held["pieces"]), 1 + 2 * len(index["pieces"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=12)
    parser.add_argument("--photos", type=int, default=6, help="photos a day (two classes)")
    parser.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("FRUITS_SHARED_DIR", REPO.parent / "shared"))
    )
    args = parser.parse_args()
    source = args.shared / "data" / "fruits-360-sample" / "Test"
    weights = args.shared / "models" / "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"
    if not source.is_dir():
        raise SystemExit(f"no held-out photos at {source}: pass --shared (the folder holding data/ and models/)")
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    if len(classes) < 2 * args.days:
        raise SystemExit(f"{source} has {len(classes)} classes; {args.days} days need {2 * args.days}")
    bound = math.ceil(math.log2(args.days)) + 1
    with tempfile.TemporaryDirectory(prefix="fruits-days-") as tmp:
        lake = Path(tmp) / "lake"
        env = {
            **os.environ,
            "FRUITS_LOCAL_LAKE": str(lake),
            "AIRFLOW_HOME": f"{tmp}/airflow_home",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": str(REPO / ".venv/bin/python"),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        subprocess.run([str(REPO / ".venv/bin/airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
        storage, yesterday, first = LocalStorage(lake), None, date(2026, 1, 1)
        print(f"{'day':>4} {'batches':>8} {'held files':>11} {'index files':>12}")
        for day in range(1, args.days + 1):
            landing = Path(tmp) / f"landing-{day:02d}"
            placed = landing_for(day, classes, args.photos, landing, yesterday)
            refit = "auto" if day == 1 else "never"  # the space is kept: its index grows in tiers
            run_day(
                env, landing, first + timedelta(days=day - 1), str(weights if weights.is_file() else "random"), refit
            )
            held, index = files_read(storage)
            print(f"{day:>4} {len(published.published_runs(storage)):>8} {held:>11} {index:>12}", flush=True)
            yesterday = placed[0]
        ok = held <= bound and index <= bound
        fruits = [str(REPO / ".venv/bin/fruits"), "--lake", str(lake), "similar", str(yesterday), "--k", "1"]
        nearest = subprocess.run(fruits, env=env, capture_output=True, text=True, check=True).stdout.split("\t")
        found_itself = nearest[3].strip().endswith(f"{yesterday.parent.name}/{yesterday.name}")
        print(
            f"after {args.days} days: ingest reads {held} held-photo files, a search {index} index files "
            f"(bound ceil(log2 {args.days}) + 1 = {bound}: {'meets' if ok else 'MISSES'}); "
            f"`fruits similar` finds a photo of the last day first: {found_itself}"
        )
        if not (ok and found_itself):
            raise SystemExit(1)


if __name__ == "__main__":
    main()
