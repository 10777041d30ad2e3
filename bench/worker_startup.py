"""What one Spark Python worker pays before its first batch, per engine: building the model from the
broadcast bytes (imports included) and running one batch of 32, in a fresh process, and its memory then.

    python bench/worker_startup.py export --weights FILE|random --out DIR     # both engines' bytes, once
    python bench/worker_startup.py start --engine onnxruntime|tensorflow --models DIR

`start` prints one JSON line: seconds to the first batch's features, and the process's RSS.
"""

import argparse
import json
import os
import pickle
import time

STARTED = time.perf_counter()  # before any import of the model's code: a worker starts from here

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def export(weights: str, out: str) -> None:
    from fruits_jobs.model import export_onnx, freeze_model, load_model

    model = load_model(weights, 224)
    os.makedirs(out, exist_ok=True)
    for engine, exported in (("onnxruntime", export_onnx(model)), ("tensorflow", freeze_model(model))):
        with open(os.path.join(out, f"{engine}.pickle"), "wb") as f:
            pickle.dump(tuple(exported), f)  # what the broadcast carries


def start(engine: str, models: str) -> None:
    import numpy as np
    import psutil

    from fruits_jobs.model import EngineModel, featurize, worker_infer_fn

    with open(os.path.join(models, f"{engine}.pickle"), "rb") as f:
        exported = EngineModel(*pickle.load(f))
    images = np.random.default_rng(0).integers(0, 256, size=(32, 224, 224, 3), dtype=np.uint8)
    featurize(worker_infer_fn("startup", lambda: exported, cores=1), images, 32)
    print(
        json.dumps(
            {
                "engine": engine,
                "first_batch_s": round(time.perf_counter() - STARTED, 2),
                "rss_mb": round(psutil.Process().memory_info().rss / 2**20),
            }
        )
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=("export", "start"))
    ap.add_argument("--weights", default="random")
    ap.add_argument("--out")
    ap.add_argument("--engine")
    ap.add_argument("--models")
    args = ap.parse_args()
    export(args.weights, args.out) if args.action == "export" else start(args.engine, args.models)
