"""`make bench`: featurization throughput of (a) our features job, (b) the seed notebook's Spark
approach, (c) a raw TensorFlow batch loop (Keras model), (c2) the same loop over the frozen TensorFlow
graph of --engine tensorflow and (d) the raw ONNX Runtime loop over the export our workers run by
default, on the same images, in one run, side by side: a/d is Spark's own overhead. Then what one
Python worker pays to start, per engine (bench/worker_startup.py).

    python bench/bench_features.py [--images DIR] [--weights FILE] [--master local[2]]

Each approach runs in its own process; its peak memory is the largest summed RSS of that process
tree (driver JVM + Python workers), sampled every 0.1 s. Images/s is each approach's own timing of
its data work: (a) the job's summary `seconds` (listing to published Parquet; loading and exporting
the model excluded), (b) the seed's timer (repartition + UDF + write), (c), (c2) and (d) the model loop alone.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from fruits.backends.local.runner import command
from fruits_jobs.layout import DEFAULT_WEIGHTS_FILE

from measure import features_job, peak_rss

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FRUITS_SHARED_DIR", REPO.parent / "shared"))
SAMPLE = SHARED / "data" / "fruits-360-sample"
WEIGHTS = SHARED / "models" / DEFAULT_WEIGHTS_FILE
SEED = SHARED / "bench" / "seed_baseline.py"
TARGETS = {"a/b": 3.0, "a/d": 0.75}
MEMORY_TARGET_MB = {"a": 4100}
FOLD_SHARE_TARGET = 0.05  # of (a)'s seconds (issue 28)  # the features job's peak before ONNX Runtime (4.1 GB)


def prepare_images(src: Path, dest: Path, min_images: int) -> int:
    """The JPEGs of src in their class folders, repeated under copy<N>/ until min_images."""
    jpgs = sorted(src.rglob("*.jpg"))
    if not jpgs:
        raise SystemExit(f"no .jpg under {src}")
    n, copy = 0, 0
    while n < min_images:
        for jpg in jpgs:
            target = dest / f"copy{copy}" / jpg.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(jpg, target)
            n += 1
        copy += 1
    return n


def run_measured(cmd, env) -> dict:
    """Run cmd, sample its process tree's RSS, return its last JSON stdout line + peak memory."""
    proc = psutil.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started = time.perf_counter()
    with peak_rss(proc, interval_s=0.1) as peaks:
        out, _ = proc.communicate()
    wall = time.perf_counter() - started
    peak = peaks["tree"]
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]}... failed with exit code {proc.returncode}:\n{out[-3000:]}")
    result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    result.update(peak_rss_mb=round(peak / 2**20), wall_s=round(wall, 1))
    return result


def time_split(summary: dict) -> dict[str, float]:
    """The job's seconds by part: the model pass split into decode, model, fold and the rest
    (reading, hashing, the staging write) in proportion to the workers' own seconds; then counting
    the outcomes, writing the tables' files, and what the fold adds after them (the wait for the
    merge and the moments file, made beside the writes)."""
    t = summary["timings"]
    worker = t["decode_worker_s"] + t["model_worker_s"] + t["fold_worker_s"]
    busy = min(1.0, worker / (t["model_pass_s"] * t["cores"]))

    def share(seconds: float) -> float:
        return t["model_pass_s"] * busy * seconds / worker if worker else 0.0

    return {
        "decode": share(t["decode_worker_s"]),
        "model": share(t["model_worker_s"]),
        "other (read, hash, staging write)": t["model_pass_s"] * (1 - busy),
        "count": t["count_s"],
        "write": t["write_s"],
        "fold (in the model pass, merge, file)": share(t["fold_worker_s"]) + t["moments_s"],
    }


def print_time_split(summary: dict) -> None:
    parts = time_split(summary)
    total = sum(parts.values())
    print(f"\n(a)'s {total:.1f} s by part:")
    for name, seconds in parts.items():
        print(f"  {name:36} {seconds:>7.1f} s  {100 * seconds / total:>5.1f} %")
    share = parts["fold (in the model pass, merge, file)"] / total
    print(f"fold share = {100 * share:.1f} %  ({'meets' if share < FOLD_SHARE_TARGET else 'ABOVE'} the target < 5 %)")


def worker_startup(weights: str, work: Path, env: dict) -> list:
    script = str(REPO / "bench" / "worker_startup.py")
    subprocess.run(
        [sys.executable, script, "export", "--weights", weights, "--out", str(work / "models")],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    for engine in ("tensorflow", "onnxruntime"):
        out = subprocess.run(
            [sys.executable, script, "start", "--engine", engine, "--models", str(work / "models")],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, default=SAMPLE)
    ap.add_argument("--weights", default=str(WEIGHTS) if WEIGHTS.is_file() else "random")
    ap.add_argument("--min-images", type=int, default=3000)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench")
    args = ap.parse_args()
    if not SEED.is_file():
        raise SystemExit(f"the seed's reference script is missing: {SEED} (set FRUITS_SHARED_DIR)")
    if not args.images.is_dir():
        raise SystemExit(f"no images at {args.images}: pass --images DIR (a Fruits-360-like folder)")

    work = Path(tempfile.mkdtemp(prefix="fruits-bench-"))
    images = work / "images"
    n = prepare_images(args.images, images, args.min_images)
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="2")
    spark_submit = str(Path(sys.executable).with_name("spark-submit"))
    print(
        f"benchmark: {n} images from {args.images}, weights {args.weights}, master {args.master}, "
        f"{os.cpu_count()} cores",
        flush=True,
    )

    results = {}
    # (a) is launched the way the DAG's local backend launches its features step.
    job = features_job(images, work, "bench", args.weights)
    results["a"] = run_measured(command(job, spark_submit, args.master), env)
    assert results["a"]["featurized"] == n, results["a"]
    # (a0): the same job on the engine it had before ONNX Runtime, for the before/after in one run.
    before = features_job(images, work / "tf", "bench", args.weights, "--engine", "tensorflow")
    results["a0"] = run_measured(command(before, spark_submit, args.master), env)
    results["b"] = run_measured(
        [
            sys.executable,
            str(SEED),
            "--input",
            str(images),
            "--weights",
            args.weights,
            "--master",
            args.master,
            "--output",
            str(work / "seed_out"),
        ],
        env,
    )
    for key, model in (("c", "keras"), ("c2", "frozen"), ("d", "onnx")):
        results[key] = run_measured(
            [
                sys.executable,
                str(REPO / "bench" / "raw_loop.py"),
                "--images",
                str(images),
                "--weights",
                args.weights,
                "--model",
                model,
            ],
            env,
        )

    names = {
        "a": "(a) our features job",
        "a0": "(a0) same, --engine tensorflow",
        "b": "(b) seed notebook approach",
        "c": "(c) raw TensorFlow loop",
        "c2": "(c2) raw loop, frozen TF graph",
        "d": "(d) raw ONNX Runtime loop",
    }
    print(f"\n{'approach':30} {'images':>7} {'seconds':>8} {'images/s':>9} {'peak RSS MB':>12} {'wall s':>7}")
    for key, r in results.items():
        print(
            f"{names[key]:30} {r.get('read', r.get('images')):>7} {r['seconds']:>8} "
            f"{r['images_per_s']:>9} {r['peak_rss_mb']:>12} {r['wall_s']:>7}"
        )
    ratios = {
        f"a/{key}": results["a"]["images_per_s"] / results[key]["images_per_s"] for key in ("a0", "b", "c", "c2", "d")
    }
    print()
    for name, value in ratios.items():
        verdict = (
            ("meets" if value >= TARGETS[name] else "BELOW") + f" the target {TARGETS[name]}"
            if name in TARGETS
            else "for information"
        )
        print(f"{name} = {value:.2f}  ({verdict})")
    print_time_split(results["a"])
    for key, limit in MEMORY_TARGET_MB.items():
        peak = results[key]["peak_rss_mb"]
        print(f"peak memory of ({key}) = {peak} MB  ({'meets' if peak < limit else 'ABOVE'} the target < {limit} MB)")
    startup = worker_startup(args.weights, work, env)
    print("\none Python worker, fresh process to its first batch of 32 (1 thread):")
    for row in startup:
        print(f"  {row['engine']:<12} {row['first_batch_s']:>6} s  {row['rss_mb']:>6} MB")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "images": n,
        "weights": args.weights,
        "master": args.master,
        "cores": os.cpu_count(),
        "results": results,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "targets": TARGETS,
        "worker_startup": startup,
        "time_split_s": {k: round(v, 2) for k, v in time_split(results["a"]).items()},
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten: {args.out / 'results.json'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
