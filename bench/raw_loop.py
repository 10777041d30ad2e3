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
from fruits_jobs.model import DEFAULT_BATCH_SIZE, export_onnx, freeze_model, load_model, worker_infer_fn  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--weights", default="random")
    ap.add_argument("--batch-size", type=int, help="default: the features job's for the engine")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--model", choices=("keras", "frozen", "onnx"), default="keras")
    args = ap.parse_args()
    args.batch_size = args.batch_size or DEFAULT_BATCH_SIZE["onnxruntime" if args.model == "onnx" else "tensorflow"]

    import tensorflow as tf

    paths = sorted(p for p in Path(args.images).rglob("*") if p.is_file())
    images, _ = decode_many([p.read_bytes() for p in paths], args.image_size)  # non-images left out
    model = load_model(args.weights, args.image_size)
    if args.model in ("frozen", "onnx"):
        exported = freeze_model(model) if args.model == "frozen" else export_onnx(model)
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
                "approach": f"raw-loop-{args.model}",
                "images": len(images),
                "seconds": round(seconds, 2),
                "images_per_s": round(len(images) / seconds, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
