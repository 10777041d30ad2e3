"""(c) of the benchmark: the practical ceiling. A plain TensorFlow batch loop over images already
decoded and resized in memory (decoding is not timed), with TensorFlow's default threading.

    python bench/raw_tf_loop.py --images DIR --weights FILE|random [--batch-size 64]
Prints one JSON line.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "spark_jobs"))

import numpy as np  # noqa: E402

from fruits_jobs.images import decode_image  # noqa: E402
from fruits_jobs.model import build_model, load_weights  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--weights", default="random")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=224)
    args = ap.parse_args()

    import tensorflow as tf

    paths = sorted(p for p in Path(args.images).rglob("*") if p.is_file())
    images = np.stack([decode_image(p.read_bytes(), args.image_size) for p in paths])
    model = build_model(args.image_size)
    model.set_weights(load_weights(args.weights, args.image_size))
    infer = tf.function(lambda x: model(tf.cast(x, tf.float32) / 127.5 - 1.0, training=False))
    infer(images[: args.batch_size])  # trace and warm up outside the timed loop
    start = time.perf_counter()
    for i in range(0, len(images), args.batch_size):
        infer(images[i:i + args.batch_size]).numpy()
    seconds = time.perf_counter() - start
    print(json.dumps({"approach": "raw-tensorflow-loop", "images": len(images), "seconds": round(seconds, 2),
                      "images_per_s": round(len(images) / seconds, 2)}))


if __name__ == "__main__":
    main()
