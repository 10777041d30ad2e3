"""`make bench-precision`: FP32 against INT8 (--precision int8), at 224 and 160 px, on the shared sample.

For each (precision, size): the features job (as the local backend launches it, local[2]) featurizes
the real Fruits-360 sample with the genuine weights, INT8 calibrated on its Training photos (the
job's own sample of them); the raw ONNX Runtime loop (bench/raw_loop.py) times the model alone on
the same photos. Printed: images/s of both, the job's peak memory and its time by part (decode,
model, other, count, write, fold), and from the job's features: 1-NN and nearest-centroid accuracy (Test photos
against Training) and the variance the first 50 components explain. Then the rule that decides the
default: INT8 only if its 1-NN is within 0.5 point of FP32's and the job is at least 1.5x faster.

    python bench/precision.py [--sizes 224,160] [--images DIR] [--weights FILE]
"""

import glob
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from fruits.backends.local.runner import command

from bench_features import run_measured, time_split
from image_sizes import quality, sample_bench
from measure import features_job

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RULE = {"one_nn_points": 0.5, "job_speedup": 1.5}  # issue 28: what makes INT8 the default


def measure(images: Path, weights: str, size: int, precision: str, work: Path, env: dict, master: str) -> dict:
    out = work / f"{precision}-{size}"
    extra = ["--image-size", str(size), "--precision", precision, "--model-cache", str(work / "models")]
    if precision == "int8":
        extra += ["--calibration", str(images)]
    spark_submit = str(Path(sys.executable).with_name("spark-submit"))
    job = run_measured(command(features_job(images, out, "p", weights, *extra), spark_submit, master), env)
    raw_args = ["--images", str(images), "--weights", weights, "--model", "onnx", "--image-size", str(size)]
    raw_args += ["--precision", precision] + (["--calibration", str(images)] if precision == "int8" else [])
    raw = run_measured([sys.executable, str(REPO / "bench" / "raw_loop.py"), *raw_args], env)
    (folder,) = glob.glob(str(out / "features" / "batch_id=p" / "run=*"))
    split = time_split(job)
    return {
        "precision": precision,
        "image_size": size,
        "job_images_per_s": job["images_per_s"],
        "raw_images_per_s": raw["images_per_s"],
        "job_peak_rss_mb": job["peak_rss_mb"],
        "raw_peak_rss_mb": raw["peak_rss_mb"],
        "time_split_s": {k: round(v, 2) for k, v in split.items()},
        "extractor": job["extractor"]["id"],
        **quality(pd.read_parquet(folder, columns=["label", "split", "features"])),
    }


def main() -> None:
    args, work, env = sample_bench(__doc__.split("\n")[0], "224,160", "precision")
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for precision in ("fp32", "int8"):
            rows.append(measure(args.images, args.weights, size, precision, work, env, args.master))
            print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{'precision':>9} {'size':>5} {'job img/s':>10} {'raw img/s':>10} {'job peak MB':>12} {'1-NN':>6} "
        f"{'centroid':>9} {'var k=50':>9}   job seconds: decode / model / other / count / write / fold"
    )
    for r in rows:
        parts = " / ".join(f"{v:.1f}" for v in r["time_split_s"].values())
        print(
            f"{r['precision']:>9} {r['image_size']:>5} {r['job_images_per_s']:>10} {r['raw_images_per_s']:>10} "
            f"{r['job_peak_rss_mb']:>12} {r['one_nn_acc']:>6} {r['nearest_centroid_acc']:>9} "
            f"{r['variance_at_k50']:>9}   {parts}"
        )
    print()
    for size in sorted({r["image_size"] for r in rows}, reverse=True):
        fp32, int8 = (
            next(r for r in rows if r["image_size"] == size and r["precision"] == p) for p in ("fp32", "int8")
        )
        job, raw = (
            int8["job_images_per_s"] / fp32["job_images_per_s"],
            int8["raw_images_per_s"] / fp32["raw_images_per_s"],
        )
        points = 100 * (fp32["one_nn_acc"] - int8["one_nn_acc"])
        model = fp32["time_split_s"]["model"] / max(int8["time_split_s"]["model"], 1e-9)
        meets = points <= DEFAULT_RULE["one_nn_points"] and job >= DEFAULT_RULE["job_speedup"]
        print(
            f"{size} px: INT8/FP32 job {job:.2f}x, raw loop {raw:.2f}x, the job's model part {model:.2f}x; "
            f"1-NN {-points:+.1f} points -> {'meets' if meets else 'does NOT meet'} the rule for the default "
            f"(1-NN within {DEFAULT_RULE['one_nn_points']} point, job >= {DEFAULT_RULE['job_speedup']}x)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision.json").write_text(json.dumps(rows, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
