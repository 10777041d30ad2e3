"""MobileNetV2 (ImageNet) as a 1280-d feature extractor: weights on the driver, model per worker.

`include_top=False, pooling="avg"` gives exactly the seed notebook's `include_top=True` +
`layers[-2]` output (tests/test_model.py proves it) without building the 1000-class head.

The driver loads the weights and freezes model + weights into one TensorFlow graph (weights as
constants); that graph is what gets broadcast. A worker imports it once: no Keras model to build,
no tracing (~3 s less per worker), and constant folding merges batch norms into the convolutions
(~25 % less compute per image than the Keras model on CPU).
"""
import os
import sys
import tempfile
from typing import Callable, NamedTuple, Optional

import numpy as np

from fruits_jobs.contract import DEFAULT_WEIGHTS_FILE, FEATURE_DIM, MODELS

RANDOM_SEED = 1234
WEIGHTS_HELP = (
    "pass --weights with a Keras weights file of MobileNetV2 (alpha 1.0, no top), as a local path "
    f"or an s3:// URI, e.g. --weights s3://my-bucket/{MODELS}{DEFAULT_WEIGHTS_FILE} "
    "(save one where you have internet with: keras.applications.MobileNetV2(weights='imagenet', "
    f"include_top=False).save_weights('{DEFAULT_WEIGHTS_FILE}'))"
)


class WeightsError(RuntimeError):
    """The weights source cannot be used; the message says what to pass instead."""


def build_model(image_size: int, weights=None):
    """The feature extractor; `weights` is None or "imagenet" (Keras' own loading code)."""
    import keras

    return keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3), alpha=1.0, include_top=False,
        weights=weights, pooling="avg",
    )


def load_model(source: str, image_size: int, fetch: Optional[Callable[[str, str], None]] = None):
    """The feature extractor with the weights of `source` loaded (a Keras model, on the driver).

    source: "imagenet" (Keras download; needs internet), "random" (fixed seed; tests and
    benchmarks only), a local file, or a remote URI (s3://...) that `fetch(uri, local_path)` copies.
    """
    import keras

    if source == "random":
        print("WARNING: --weights random: features are NOT ImageNet features; use only for tests "
              "and benchmarks", file=sys.stderr)
        keras.utils.set_random_seed(RANDOM_SEED)
        return build_model(image_size)
    if source == "imagenet":
        try:
            return build_model(image_size, "imagenet")
        except Exception as exc:  # no internet, proxy, TLS...: all end the same way
            raise WeightsError(f"could not download the ImageNet weights ({type(exc).__name__}: {exc}); "
                               + WEIGHTS_HELP) from None
    local = source
    if "://" in source and not source.startswith("file://"):
        if fetch is None:
            raise WeightsError(f"no way to fetch {source}; " + WEIGHTS_HELP)
        tmp_dir = tempfile.mkdtemp(prefix="fruits-weights-")
        # Keras picks the loader by suffix: keep the file's own name.
        local = os.path.join(tmp_dir, source.rstrip("/").rsplit("/", 1)[-1])
        try:
            fetch(source, local)
        except Exception as exc:
            raise WeightsError(f"could not read weights from {source} ({type(exc).__name__}: {exc}); "
                               + WEIGHTS_HELP) from None
    elif source.startswith("file://"):
        local = source[len("file://"):]
    if not os.path.isfile(local):
        raise WeightsError(f"weights file not found: {source}; " + WEIGHTS_HELP)
    model = build_model(image_size)
    try:
        model.load_weights(local)
    except Exception as exc:
        raise WeightsError(f"{source} is not a MobileNetV2 (alpha 1.0, no top) weights file "
                           f"({type(exc).__name__}: {exc}); " + WEIGHTS_HELP) from None
    return model


class FrozenModel(NamedTuple):
    """A serialized GraphDef: uint8 images (n, size, size, 3) in, float32 (n, 1280) out."""
    graph_def: bytes
    input_name: str
    output_name: str


def freeze_model(model) -> FrozenModel:
    """Model + weights (+ the [-1, 1] scaling of preprocess_input) as one constant graph."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    image_size = model.input_shape[1]

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")])
    def infer(images):
        # mobilenet_v2.preprocess_input, inside the graph: RGB 0..255 -> [-1, 1]
        return model(tf.cast(images, tf.float32) / 127.5 - 1.0, training=False)

    frozen = convert_variables_to_constants_v2(infer.get_concrete_function())
    return FrozenModel(frozen.graph.as_graph_def().SerializeToString(),
                       frozen.inputs[0].name, frozen.outputs[0].name)


# One model per Python worker process, reused by every task and batch that worker runs
# (spark.python.worker.reuse is on by default). Keyed so a new job in the same worker rebuilds.
_WORKER_MODELS = {}


def configure_tensorflow_threads(cores: int) -> None:
    """Give TensorFlow exactly the cores Spark gave this task, or tasks fight over the CPU."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(cores)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already initialised in this process: settings are fixed


def worker_infer_fn(key, frozen_provider: Callable[[], FrozenModel], cores: int):
    """A uint8 batch -> float32 (n, 1280) function, imported once per worker process."""
    fn = _WORKER_MODELS.get(key)
    if fn is None:
        configure_tensorflow_threads(cores)
        import tensorflow as tf

        frozen = frozen_provider()
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(frozen.graph_def)
        graph = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
        fn = _WORKER_MODELS[key] = graph.prune(graph.graph.get_tensor_by_name(frozen.input_name),
                                               graph.graph.get_tensor_by_name(frozen.output_name))
    return fn


def featurize(infer, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Run the model over uint8 images in chunks of batch_size."""
    if len(images) == 0:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    import tensorflow as tf

    out = [infer(tf.constant(images[i:i + batch_size])).numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32, copy=False)
