"""`make bench-sizes`: the model's input size traded against speed and quality, on the shared sample.

For each --image-size, the features job (as the local backend launches it, local[2]) featurizes the
real Fruits-360 sample with the genuine weights, and the raw ONNX Runtime loop (bench/raw_loop.py)
times the model alone on the same photos; then, from the job's features: nearest-centroid accuracy
(Test photos against the Training centroids of their class), 1-NN accuracy (Test against Training),
and the share of variance the first 50 principal components explain.

    python bench/image_sizes.py [--sizes 224,192,160,128] [--images DIR] [--weights FILE]
"""

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from fruits.backends.local.runner import command

from bench_features import SAMPLE, WEIGHTS, run_measured
from measure import features_job

REPO = Path(__file__).resolve().parents[1]


def quality(df: pd.DataFrame, k: int = 50) -> dict:
    x = np.stack(df["features"].to_numpy()).astype(np.float64)
    labels, train = df["label"].to_numpy(), (df["split"] == "Training").to_numpy()
    classes = sorted(set(labels[train]))
    centroids = np.stack([x[train & (labels == c)].mean(axis=0) for c in classes])
    test = x[~train]
    nearest_centroid = np.array(classes)[((test[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)]
    d = (test**2).sum(1)[:, None] - 2 * test @ x[train].T + (x[train] ** 2).sum(1)[None]
    nearest_photo = labels[train][d.argmin(1)]
    centered = x - x.mean(axis=0)
    eig = np.linalg.eigvalsh(centered.T @ centered)[::-1]
    return {
        "nearest_centroid_acc": round(float((nearest_centroid == labels[~train]).mean()), 3),
        "one_nn_acc": round(float((nearest_photo == labels[~train]).mean()), 3),
        f"variance_at_k{k}": round(float(eig[:k].sum() / eig.sum()), 3),
        "test_photos": int((~train).sum()),
    }


def sample_bench(description: str, sizes: str, name: str) -> tuple[argparse.Namespace, Path, dict]:
    """A benchmark on the shared sample with the genuine weights, by image size: its arguments, a
    scratch folder and the jobs' environment (bench-sizes, bench-precision)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--sizes", default=sizes)
    ap.add_argument("--images", type=Path, default=SAMPLE)
    ap.add_argument("--weights", default=str(WEIGHTS))
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench")
    args = ap.parse_args()
    if not args.images.is_dir() or not Path(args.weights).is_file():
        raise SystemExit(f"needs the shared sample ({args.images}) and the genuine weights ({args.weights})")
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="2")
    return args, Path(tempfile.mkdtemp(prefix=f"fruits-{name}-")), env


def main() -> None:
    args, work, env = sample_bench(__doc__.split("\n")[0], "224,192,160,128", "sizes")
    spark_submit = str(Path(sys.executable).with_name("spark-submit"))
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        out = work / str(size)
        job = features_job(args.images, out, "sizes", args.weights, "--image-size", str(size))
        result = run_measured(command(job, spark_submit, args.master), env)
        (folder,) = glob.glob(str(out / "features" / "batch_id=sizes" / "run=*"))
        raw = run_measured(
            [
                sys.executable,
                str(REPO / "bench" / "raw_loop.py"),
                "--images",
                str(args.images),
                "--weights",
                args.weights,
                "--model",
                "onnx",
                "--image-size",
                str(size),
            ],
            env,
        )
        rows.append(
            {
                "image_size": size,
                "images_per_s": result["images_per_s"],
                "raw_onnx_images_per_s": raw["images_per_s"],
                **quality(pd.read_parquet(folder, columns=["label", "split", "features"])),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{'image size':>10} {'job images/s':>13} {'raw ORT images/s':>17} {'nearest centroid':>17} {'1-NN':>6} "
        f"{'variance k=50':>14}"
    )
    for r in rows:
        print(
            f"{r['image_size']:>10} {r['images_per_s']:>13} {r['raw_onnx_images_per_s']:>17} "
            f"{r['nearest_centroid_acc']:>17} {r['one_nn_acc']:>6} {r['variance_at_k50']:>14}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "image_sizes.json").write_text(json.dumps(rows, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
