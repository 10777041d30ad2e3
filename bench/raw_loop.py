"""(c), (c2) and (d) of the benchmark: a plain batch loop over images already decoded and resized in
memory (decoding is not timed), in one process using every core.

    python bench/raw_loop.py --images DIR --weights FILE|random [--batch-size N] [--model keras|frozen|onnx]

--model keras (default): the Keras model in a tf.function, TensorFlow's default threading.
--model frozen: the frozen TensorFlow graph of the features job's --engine tensorflow.
--model onnx: the ONNX export our workers run by default, in ONNX Runtime (intra-op threads = cores):
the same engine as (a) without Spark, so a/d is Spark's own overhead.
Prints one JSON line.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np  # noqa: E402

from fruits_jobs.images import decode_many  # noqa: E402
from fruits_jobs.model import (  # noqa: E402
    DEFAULT_BATCH_SIZE,
    calibration_sample,
    check_int8,
    export_onnx,
    freeze_model,
    load_model,
    quantize_int8,
    worker_infer_fn,
)


def int8_as_the_job_makes_it(fp32, calibration: Path, image_size: int):
    """The features job's INT8 graph (features.int8_model): the same sample, quantizer and check."""
    files = sorted((str(p), p.stat().st_size) for p in calibration.rglob("*") if p.is_file())
    uris, _ = calibration_sample(files, str(calibration))
    images, _ = decode_many([Path(u).read_bytes() for u in uris], image_size)
    int8 = quantize_int8(fp32, images)
    check_int8(fp32, int8, images)
    return int8


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--weights", default="random")
    ap.add_argument("--batch-size", type=int, help="default: the features job's for the engine")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--model", choices=("keras", "frozen", "onnx"), default="keras")
    ap.add_argument(
        "--precision", choices=("fp32", "int8"), default="fp32", help="--model onnx: int8 as the job makes it"
    )
    ap.add_argument("--calibration", help="--precision int8: the folder of photos to calibrate on (as the job's)")
    args = ap.parse_args()
    args.batch_size = args.batch_size or DEFAULT_BATCH_SIZE["onnxruntime" if args.model == "onnx" else "tensorflow"]

    import tensorflow as tf

    paths = sorted(p for p in Path(args.images).rglob("*") if p.is_file())
    images, _ = decode_many([p.read_bytes() for p in paths], args.image_size)  # non-images left out
    model = load_model(args.weights, args.image_size)
    if args.model in ("frozen", "onnx"):
        exported = freeze_model(model) if args.model == "frozen" else export_onnx(model)
        if args.precision == "int8":
            exported = int8_as_the_job_makes_it(exported, Path(args.calibration), args.image_size)
        infer = worker_infer_fn("bench", lambda: exported, cores=os.cpu_count())
    else:
        infer = tf.function(lambda x: model(tf.cast(x, tf.float32) / 127.5 - 1.0, training=False))
    infer(images[: args.batch_size])  # trace and warm up outside the timed loop
    start = time.perf_counter()
    for i in range(0, len(images), args.batch_size):
        np.asarray(infer(images[i : i + args.batch_size]))
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "approach": f"raw-loop-{args.model}-{args.precision}",
                "images": len(images),
                "seconds": round(seconds, 2),
                "images_per_s": round(len(images) / seconds, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
