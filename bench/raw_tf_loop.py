"""(c) of the benchmark: the practical ceiling. A plain TensorFlow batch loop over images already
decoded and resized in memory (decoding is not timed), with TensorFlow's default threading.

    python bench/raw_tf_loop.py --images DIR --weights FILE|random [--batch-size 32] [--model keras|frozen]

--model keras (default) is the plain loop: the Keras model in a tf.function. --model frozen runs the
frozen graph our features job's workers run, to separate Spark's overhead from the model's speed.
Prints one JSON line.
"""
import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np  # noqa: E402
from fruits_jobs.images import decode_image  # noqa: E402
from fruits_jobs.model import freeze_model, load_model, worker_infer_fn  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--weights", default="random")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--model", choices=("keras", "frozen"), default="keras")
    args = ap.parse_args()

    import tensorflow as tf

    paths = sorted(p for p in Path(args.images).rglob("*") if p.is_file())
    images = np.stack([decode_image(p.read_bytes(), args.image_size) for p in paths])
    model = load_model(args.weights, args.image_size)
    if args.model == "frozen":
        frozen = freeze_model(model)
        graph = worker_infer_fn("bench", lambda: frozen, cores=os.cpu_count())

        def infer(x):
            return graph(tf.constant(x))
    else:
        infer = tf.function(lambda x: model(tf.cast(x, tf.float32) / 127.5 - 1.0, training=False))
    infer(images[: args.batch_size])  # trace and warm up outside the timed loop
    start = time.perf_counter()
    for i in range(0, len(images), args.batch_size):
        infer(images[i:i + args.batch_size]).numpy()
    seconds = time.perf_counter() - start
    print(json.dumps({"approach": f"raw-tensorflow-loop-{args.model}", "images": len(images),
                      "seconds": round(seconds, 2), "images_per_s": round(len(images) / seconds, 2)}))


if __name__ == "__main__":
    main()
