"""MobileNetV2 (ImageNet) as a 1280-d feature extractor: weights on the driver, model per worker.

`include_top=False, pooling="avg"` gives exactly the seed notebook's `include_top=True` +
`layers[-2]` output (tests/test_model.py proves it) without building the 1000-class head.

The driver loads the weights into Keras and exports model + weights + the [-1, 1] scaling of
preprocess_input as one ONNX graph (tf2onnx), checked against Keras on a probe batch; its bytes
are what gets broadcast. Each Python worker opens one ONNX Runtime session and keeps it across
tasks: no TensorFlow in the workers, and about twice the images per core of TensorFlow on CPU
(docs/performance.md). `--engine tensorflow` keeps the previous path: the same model frozen into one
TensorFlow graph (weights as constants), run by TensorFlow in the workers.
"""

import os
import re
import sys
import tempfile
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from fruits_jobs.contract import FEATURE_DIM
from fruits_jobs.extractors import RANDOM_SEED
from fruits_jobs.layout import DEFAULT_WEIGHTS_FILE, MODELS

WEIGHTS_HELP = (
    "pass --weights with a Keras weights file of MobileNetV2 (alpha 1.0, no top), or an ONNX model this "
    f"job exported from one (models/*.onnx), as a local path or an s3:// URI, e.g. --weights "
    f"s3://my-bucket/{MODELS}{DEFAULT_WEIGHTS_FILE} "
    "(save one where you have internet with: keras.applications.MobileNetV2(weights='imagenet', "
    f"include_top=False).save_weights('{DEFAULT_WEIGHTS_FILE}'))"
)


class WeightsError(RuntimeError):
    """The weights source cannot be used; the message says what to pass instead."""


def build_model(image_size: int, weights=None):
    """The feature extractor; `weights` is None or "imagenet" (Keras' own loading code)."""
    import keras

    return keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3),
        alpha=1.0,
        include_top=False,
        weights=weights,
        pooling="avg",
    )


def local_copy(source: str, fetch: Callable[[str, str], None] | None = None) -> str:
    """The local path of a file source: itself, or a copy that `fetch(uri, local_path)` made of a
    remote URI (s3://...), under the file's own name (Keras picks its loader by suffix)."""
    local = source[len("file://") :] if source.startswith("file://") else source
    if "://" in source and not source.startswith("file://"):
        if fetch is None:
            raise WeightsError(f"no way to fetch {source}; " + WEIGHTS_HELP)
        local = os.path.join(tempfile.mkdtemp(prefix="fruits-weights-"), source.rstrip("/").rsplit("/", 1)[-1])
        try:
            fetch(source, local)
        except Exception as exc:
            raise WeightsError(
                f"could not read weights from {source} ({type(exc).__name__}: {exc}); " + WEIGHTS_HELP
            ) from None
    if not os.path.isfile(local):
        raise WeightsError(f"weights file not found: {source}; " + WEIGHTS_HELP)
    return local


def package_version(*dists: str) -> str:
    """The installed version of the first of dists found, read without importing it."""
    from importlib import metadata

    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "none"


def exporter_versions() -> str:
    """What an exported ONNX graph depends on besides the weights, read without importing TensorFlow."""
    return (
        f"tf2onnx-{package_version('tf2onnx')}_opset-{ONNX_OPSET}_tf-{package_version('tensorflow-cpu', 'tensorflow')}"
        f"_keras-{package_version('keras')}"
    )


def export_name(engine: str, given_onnx: bool) -> str:
    """The extractor's export part (extractors.py): what turned the weights into the workers' graph."""
    if engine == "tensorflow":
        return f"frozen_tf-{package_version('tensorflow-cpu', 'tensorflow')}_keras-{package_version('keras')}"
    return "onnx-given" if given_onnx else f"onnx_{exporter_versions()}"


def onnx_cache_name(weights: str, image_size: int) -> str:
    """The exported graph's file name in the lake's models/: by content (the extractor's weights part,
    extractors.weights_name: a file's sha256, or a named source such as random's seed; the input size)
    and by what exported it, so a later run with the same of each reuses it and any change exports anew."""
    kind, _, name = weights.partition(":")
    part = name if kind == "sha256" else f"{kind}-{name}"  # a file's: its digest alone, as ever
    return f"mobilenet_v2_{part}_{image_size}px_{exporter_versions()}.onnx"


def load_model(source: str, image_size: int, fetch: Callable[[str, str], None] | None = None):
    """The feature extractor with the weights of `source` loaded (a Keras model, on the driver).

    source: "imagenet" (Keras download; needs internet), "random" (fixed seed; tests and
    benchmarks only), or a .weights.h5 file (see local_copy).
    """
    import keras

    if source == "random":
        print(
            "WARNING: --weights random: features are NOT ImageNet features; use only for tests and benchmarks",
            file=sys.stderr,
        )
        keras.utils.set_random_seed(RANDOM_SEED)
        return build_model(image_size)
    if source == "imagenet":
        try:
            return build_model(image_size, "imagenet")
        except Exception as exc:  # no internet, proxy, TLS...: all end the same way
            raise WeightsError(
                f"could not download the ImageNet weights ({type(exc).__name__}: {exc}); " + WEIGHTS_HELP
            ) from None
    local = local_copy(source, fetch)
    model = build_model(image_size)
    try:
        model.load_weights(local)
    except Exception as exc:
        raise WeightsError(
            f"{source} is not a MobileNetV2 (alpha 1.0, no top) weights file "
            f"({type(exc).__name__}: {exc}); " + WEIGHTS_HELP
        ) from None
    return model


ENGINES = ("onnxruntime", "tensorflow")
# Images per model call, measured per engine on this project's CPUs (docs/performance.md): ONNX Runtime
# is fastest per image on small batches (8: +28 % over 32 on one thread, cache-resident
# activations); TensorFlow's frozen graph on 32 (as fast as 64, ~0.45 GB less per worker).
DEFAULT_BATCH_SIZE = {"onnxruntime": 8, "tensorflow": 32}
ONNX_OPSET = 17
# The export must give Keras' features: cosine per probe image at least this (measured 0.9999997).
MIN_EXPORT_COSINE = 0.9999
PROBE_IMAGES = 4


class EngineModel(NamedTuple):
    """What the driver broadcasts: a serialized graph (ONNX model, or TensorFlow GraphDef) taking
    uint8 images (n, size, size, 3) and giving float32 (n, 1280)."""

    engine: str
    graph: bytes
    input_name: str
    output_name: str


def uint8_images_spec(image_size: int):
    import tensorflow as tf

    return tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")


def scaled_model_fn(model):
    """model with mobilenet_v2.preprocess_input in front (RGB 0..255 -> [-1, 1]), as a tf.function
    of uint8 images: the one definition both engines are built from."""
    import tensorflow as tf

    @tf.function(input_signature=[uint8_images_spec(model.input_shape[1])])
    def infer(images):
        return model(tf.cast(images, tf.float32) / 127.5 - 1.0, training=False)

    return infer


def export_onnx(model) -> EngineModel:
    """Model + weights + scaling as one ONNX graph (tf2onnx, opset ONNX_OPSET)."""
    import tf2onnx

    infer = scaled_model_fn(model)
    proto, _ = tf2onnx.convert.from_function(infer, input_signature=infer.input_signature, opset=ONNX_OPSET)
    return onnx_model(proto.SerializeToString(), model.input_shape[1])


def onnx_model(graph: bytes, image_size: int, source: str = "the exported model") -> EngineModel:
    """An ONNX graph as the workers will run it, after checking it is a feature extractor for
    image_size: uint8 (n, size, size, 3) in, (n, 1280) out."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise WeightsError(
            f"{source} is not an ONNX model ONNX Runtime can load ({type(exc).__name__}: {exc}); " + WEIGHTS_HELP
        ) from None
    (inp,), out = session.get_inputs(), session.get_outputs()[0]
    expected = [image_size, image_size, 3]
    if inp.type != "tensor(uint8)" or list(inp.shape[1:]) != expected or out.shape[-1] != FEATURE_DIM:
        raise WeightsError(
            f"{source} takes {inp.type} {inp.shape} and gives {out.shape}; a feature extractor for "
            f"--image-size {image_size} takes tensor(uint8) [n, {image_size}, {image_size}, 3] and "
            f"gives [n, {FEATURE_DIM}] (export one with this job, from a .weights.h5 file)"
        )
    return EngineModel("onnxruntime", graph, inp.name, out.name)


def probe_images(image_size: int) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, size=(PROBE_IMAGES, image_size, image_size, 3), dtype=np.uint8)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of a with the same row of b."""
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def check_export(model, exported: EngineModel) -> float:
    """The smallest cosine between Keras' and the export's features on a probe batch; raises when
    the export changes the features."""
    images = probe_images(model.input_shape[1])
    expected = scaled_model_fn(model)(images).numpy()
    got = onnx_session_fn(exported, cores=1)(images)  # a throw-away session: not a worker's cached one
    worst = float(cosines(got, expected).min())
    if not worst >= MIN_EXPORT_COSINE:
        raise RuntimeError(
            f"the ONNX export differs from the Keras model (cosine {worst:.7f} < {MIN_EXPORT_COSINE}): "
            "rerun with --engine tensorflow, and report the tf2onnx/TensorFlow versions"
        )
    return worst


def freeze_model(model) -> EngineModel:
    """--engine tensorflow: model + weights + scaling as one constant TensorFlow graph."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(scaled_model_fn(model).get_concrete_function())
    return EngineModel(
        "tensorflow", frozen.graph.as_graph_def().SerializeToString(), frozen.inputs[0].name, frozen.outputs[0].name
    )


# One model per Python worker process, reused by every task and batch that worker runs
# (spark.python.worker.reuse is on by default). Keyed so a new job in the same worker rebuilds.
_WORKER_MODELS: dict = {}


def configure_tensorflow_threads(cores: int) -> None:
    """Give TensorFlow exactly the cores Spark gave this task, or tasks fight over the CPU."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(cores)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already initialised in this process: settings are fixed


def onnx_session_fn(exported: EngineModel, cores: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # The task's cores for the operators, none for running operators side by side: the same
    # split as TensorFlow's, so concurrent tasks in one executor do not fight over the CPU.
    options.intra_op_num_threads = cores
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(exported.graph, options, providers=["CPUExecutionProvider"])
    return lambda images: session.run([exported.output_name], {exported.input_name: images})[0]


def tensorflow_graph_fn(exported: EngineModel, cores: int):
    configure_tensorflow_threads(cores)
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(exported.graph)
    graph = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
    run = graph.prune(
        graph.graph.get_tensor_by_name(exported.input_name), graph.graph.get_tensor_by_name(exported.output_name)
    )
    return lambda images: run(tf.constant(images)).numpy()


def worker_infer_fn(key, model_provider: Callable[[], EngineModel], cores: int):
    """A uint8 batch -> float32 (n, 1280) function, built once per worker process."""
    fn = _WORKER_MODELS.get(key)
    if fn is None:
        exported = model_provider()
        build = onnx_session_fn if exported.engine == "onnxruntime" else tensorflow_graph_fn
        fn = _WORKER_MODELS[key] = build(exported, cores)
    return fn


def featurize(infer, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Run the model over uint8 images in chunks of batch_size."""
    if len(images) == 0:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    out = [infer(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32, copy=False)


# ---- INT8 (--precision int8): ONNX Runtime's static quantization of the FP32 export ---------------
# QDQ format, per-channel weights, UINT8 activations, MinMax calibration: the best 1-NN of the
# variants measured on the shared sample (percentile, entropy, symmetric INT8 activations, first/last
# or depthwise convolutions left in FP32: docs/performance.md, "Precision"). UINT8 weights (U8U8), not
# INT8: ONNX Runtime's U8S8 kernels saturate on x86 CPUs without VNNI (its "Quantize ONNX models" guide,
# U8U8 has no saturation), so one U8S8 graph gave other features there (AMD EPYC, AVX2 only: mean
# cosine to FP32 0.845, 0.820 with reduce_range); an extractor must give the same features anywhere.
CALIBRATION_PHOTOS = 300
MIN_INT8_COSINE = 0.90  # mean cosine to FP32 on the calibration photos (measured 0.955 at 224 px)


def calibration_sample(files: list[tuple[str, int]], root: str, count: int = CALIBRATION_PHOTOS):
    """The calibration photos among files ((URI, size) under root): the Training ones when some path
    has a Training folder (Test photos score the result, never calibrate it), spread evenly over the
    sorted paths (so over the classes), `count` at most; and the set's name (a digest of their
    relative paths and sizes: known from one listing, so a cached graph is found without reading them)."""
    import hashlib

    from fruits_jobs import contract

    prefix = root.rstrip("/") + "/"
    relative = [(uri[len(prefix) :] if uri.startswith(prefix) else uri, uri, size) for uri, size in files]
    photos = [f for f in relative if contract.unreadable_name_reason(f[0].rsplit("/", 1)[-1]) is None and f[2] > 0]
    training = [f for f in photos if "Training" in f[0].split("/")[:-1]]
    chosen = training or photos
    chosen = [chosen[i * len(chosen) // count] for i in range(count)] if len(chosen) > count else chosen
    name = hashlib.sha256("\n".join(f"{rel}\t{size}" for rel, _, size in chosen).encode()).hexdigest()[:12]
    return [uri for _, uri, _ in chosen], name


def int8_export_name(fp32_export: str, calibration: str) -> str:
    """The export part of an INT8 extractor: the FP32 export's, the quantizer's and the calibration set's."""
    return f"{fp32_export}+int8-qdq-u8u8-perchannel-minmax_calib-{calibration}_ort-{package_version('onnxruntime')}"


def calibration_of(export: str) -> str | None:
    """The calibration set's name in an INT8 export name (int8_export_name), None in another."""
    found = re.search(r"_calib-([0-9a-f]+)_", export)
    return found.group(1) if found else None


def int8_cache_name(weights: str, image_size: int, calibration: str) -> str:
    return onnx_cache_name(weights, image_size).replace(
        ".onnx", f"_int8-{calibration}_u8u8_ort-{package_version('onnxruntime')}.onnx"
    )


def quantize_int8(fp32: EngineModel, calibration: np.ndarray) -> EngineModel:
    """fp32's graph statically quantized (see above), calibrated on uint8 images."""
    from pathlib import Path

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{fp32.input_name: calibration[i : i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="fruits-int8-") as tmp:
        source, prepared, quantized = (Path(tmp) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(fp32.graph)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return fp32._replace(graph=quantized.read_bytes())


def check_int8(fp32: EngineModel, int8: EngineModel, images: np.ndarray) -> tuple[float, float]:
    """(mean, smallest) cosine between the INT8 and the FP32 features of images; raises when the mean
    is below MIN_INT8_COSINE (the quantized model no longer gives the same features)."""
    expected = featurize(onnx_session_fn(fp32, cores=1), images, 16)
    got = featurize(onnx_session_fn(int8, cores=1), images, 16)
    found = cosines(got, expected)
    mean, worst = float(found.mean()), float(found.min())
    if not mean >= MIN_INT8_COSINE:
        raise RuntimeError(
            f"the INT8 model's features differ from FP32's on the calibration photos (mean cosine {mean:.4f} < "
            f"{MIN_INT8_COSINE}): use --precision fp32, or calibrate on photos like the batches'"
        )
    return mean, worst
